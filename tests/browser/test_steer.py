"""The steering chat in headless Chromium: pick the bridge feature, chat, share, continue."""

import json
import math
import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ACCOUNT

pytestmark = pytest.mark.browser
# A reply of 64 tokens on two busy CPU cores (the suite runs beside it) can take over 5 s.
REPLY_TIMEOUT_MS = 30_000
BRIDGE = re.compile(r"golden gate|bridge", re.IGNORECASE)


def _reply(page, side: str):
    return page.locator(f"#{side}-messages .message.assistant:not(.frozen) .content").last


def test_pick_the_bridge_feature_chat_and_share(page, server_url):
    page.goto(f"{server_url}/steer")
    page.click("#steer-share")  # anonymous: the server says what to do
    expect(page.locator("#steer-status")).to_contain_text("Sign in")
    page.get_by_role("link", name="Sign in").click()
    page.fill("input[name=name]", ACCOUNT[0])
    page.fill("input[name=password]", ACCOUNT[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server_url}/steer")  # back where the sign-in started
    expect(page.locator(".site-header")).to_contain_text(ACCOUNT[0])
    page.fill("#pick-q", "golden gate bridge")
    page.locator("button.pick", has_text="Golden Gate Bridge").first.click()
    row = page.locator("#steer-features tbody tr")
    expect(row).to_have_count(1)
    row.locator("input[type=range]").fill("100")  # the slider's end: 10 × max activation
    expect(row.locator("input.strength")).to_have_value("10.00")
    page.fill("#gen-temperature", "0")
    page.fill("#steer-message", "What is your favourite food?")
    page.press("#steer-message", "Enter")
    for side in ("default", "steered"):  # both columns stream a reply and finish
        expect(_reply(page, side)).not_to_have_text("")
        expect(page.locator(f"#{side}-messages .streaming")).to_have_count(
            0, timeout=REPLY_TIMEOUT_MS
        )
    steered, default = _reply(page, "steered").inner_text(), _reply(page, "default").inner_text()
    assert BRIDGE.search(steered) and not BRIDGE.search(default)

    page.click("#steer-share")
    link = page.locator("#share-link")
    expect(link).to_be_visible()
    shared = link.input_value()
    assert re.search(r"/steer/[A-Za-z0-9_-]{8}$", shared)

    page.goto(shared)  # a visitor sees the transcript and the feature, and can go on
    expect(page.locator("#steered-messages .message")).to_have_count(2)
    expect(page.locator("#steer-features tbody tr")).to_contain_text("Golden Gate Bridge")
    expect(_reply(page, "steered")).to_have_text(steered)
    page.fill("#steer-message", "And what colour is it?")
    page.press("#steer-message", "Enter")
    expect(page.locator("#steered-messages .message")).to_have_count(4)
    expect(page.locator("#steered-messages .streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)


def test_a_preset_link_loads_the_feature_and_the_feature_page_links_to_it(page, server_url):
    page.goto(f"{server_url}/monoscope-demo/res1/7")
    page.click("text=Steer with this feature")
    expect(page).to_have_url(re.compile(r"/steer\?f=monoscope-demo%2Fres1%2F7%3Aclamp%3A5"))
    row = page.locator("#steer-features tbody tr")
    expect(row).to_contain_text("demo feature seven")
    expect(row.locator("input.strength")).to_have_value("5.00")
    exact = row.locator("input.strength")
    exact.fill("3.25")
    exact.press("Tab")  # a change event: the slider follows, finer near zero
    expect(row.locator("input[type=range]")).to_have_value("57")
    exact.fill("42")
    exact.press("Tab")
    expect(exact).to_have_value("10.00")  # held to the server's limit
    exact.fill("-2.5")
    exact.press("Tab")
    page.fill("#gen-max-tokens", "4")
    page.fill("#gen-top-p", "0.9")
    page.fill("#gen-frequency-penalty", "0.5")
    page.fill("#gen-presence-penalty", "0.25")
    with page.expect_request("**/api/v1/steer/stream") as sent:
        page.fill("#steer-message", "Hello")
        page.press("#steer-message", "Enter")
    body = sent.value.post_data_json
    assert body["features"][0]["strength"] == -2.5
    assert (body["top_p"], body["frequency_penalty"], body["presence_penalty"]) == (0.9, 0.5, 0.25)
    expect(page.locator("#steered-messages .streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    page.fill("#gen-frequency-penalty", "5")  # typed past the box's max: the server says which
    page.fill("#steer-message", "Hello again")
    page.press("#steer-message", "Enter")
    expect(page.locator("#steer-status")).to_contain_text("frequency_penalty")
    expect(page.locator("#steered-messages .message")).to_have_count(2)  # the failed turn is gone


def test_units_positions_cap_and_the_multiplier_reach_the_request(page, server_url):
    page.goto(f"{server_url}/steer?f=monoscope-demo/res1/7:clamp:2")
    max_act = page.evaluate(
        "JSON.parse(document.getElementById('steer-state').textContent).features[0].max_act"
    )
    row = page.locator("#steer-features tbody tr")
    slider = row.locator("input[type=range]").input_value()
    row.get_by_label("units of feature 7").select_option("raw")  # converts, the slider stays
    expect(row.locator("input.strength")).to_have_value(f"{round(2 * max_act, 2):.2f}")
    expect(row.locator("input[type=range]")).to_have_value(slider)
    row.get_by_label("mode of feature 7").select_option("cap")
    row.get_by_label("positions of feature 7").select_option("generated")
    page.fill("#gen-multiplier", "1.5")
    page.fill("#gen-max-tokens", "4")
    with page.expect_request("**/api/v1/steer/stream") as sent:
        page.fill("#steer-message", "Hello")
        page.press("#steer-message", "Enter")
    body = sent.value.post_data_json
    assert body["multiplier"] == 1.5
    assert body["features"] == [
        {
            "sae": "res1",
            "index": 7,
            "mode": "cap",
            "strength": round(2 * max_act, 2),
            "units": "raw",
            "positions": "generated",
            "when": None,
        }
    ]
    expect(page.locator("#steered-messages .streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#steer-status")).to_have_text("")  # the server took it
    row.get_by_label("units of feature 7").select_option("max_act")  # and back again
    expect(row.locator("input.strength")).to_have_value("2.00")


def test_conditions_on_a_row_and_stop_conditions_reach_the_request(page, server_url):
    page.goto(f"{server_url}/steer?f=monoscope-demo/res1/7:clamp:2:when:res1/3>0.5&stop=res1/9>2")
    row = page.locator("#steer-features tbody tr")
    condition = row.get_by_label("condition of feature 7")
    expect(condition).to_have_value("res1/3>0.5")  # the preset's condition, as written
    expect(page.locator("#gen-stop-when")).to_have_value("res1/9>2")
    condition.fill("res1/3 < 0.5")
    condition.dispatch_event("change")
    expect(condition).to_have_class(re.compile("invalid"))
    expect(page.locator("#steer-status")).to_contain_text("SAE/INDEX>LEVEL")
    condition.fill("res1/4>0.25")
    condition.dispatch_event("change")
    expect(condition).not_to_have_class(re.compile("invalid"))
    page.fill("#gen-stop-when", "res1/9>2, nonsense")
    page.fill("#steer-message", "Hello")
    page.press("#steer-message", "Enter")  # refused before anything is sent
    expect(page.locator("#steer-status")).to_contain_text("stop conditions")
    expect(page.locator("#steered-messages .message")).to_have_count(0)
    # activations are never negative: this stop condition ends both replies at their first token
    page.fill("#gen-stop-when", "res1/9>-1")
    page.fill("#gen-temperature", "0")
    with page.expect_request("**/api/v1/steer/stream") as sent:
        page.press("#steer-message", "Enter")
    body = sent.value.post_data_json
    assert body["features"][0]["when"] == {"sae": "res1", "index": 4, "above": 0.25}
    assert body["stop_when"] == [{"sae": "res1", "index": 9, "above": -1}]
    expect(page.locator("#steered-messages .streaming")).to_have_count(0, timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#steer-status")).to_have_text(
        "default and steered reply ended by a stop condition"
    )
    assert _reply(page, "default").inner_text().strip()


def test_frozen_attention_adds_a_reply_under_the_steered_one_outside_the_history(page, server_url):
    page.goto(f"{server_url}/steer?f=monoscope-demo/res1/7:clamp:4")
    page.check("#gen-frozen")
    page.fill("#gen-temperature", "0")
    page.fill("#gen-max-tokens", "12")
    with page.expect_response("**/api/v1/steer/frozen") as answered:
        page.fill("#steer-message", "What is your favourite food?")
        page.press("#steer-message", "Enter")
    frozen = answered.value.json()
    bubble = page.locator("#steered-messages .message.frozen")
    expect(bubble).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    expect(bubble.locator(".role")).to_have_text("Model, attention frozen")
    expect(bubble.locator(".content")).to_have_text(frozen["text"])
    expect(page.locator("#steer-status")).to_have_text("")
    # the next turn is generated from the ordinary steered reply, never the frozen one
    with page.expect_request("**/api/v1/steer/stream") as sent:
        page.fill("#steer-message", "And then?")
        page.press("#steer-message", "Enter")
    history = sent.value.post_data_json["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    ordinary = page.locator("#steered-messages .message.assistant:not(.frozen) .content").first
    assert history[1]["content"] == ordinary.inner_text()
    expect(page.locator("#steered-messages .message.frozen")).to_have_count(
        2, timeout=REPLY_TIMEOUT_MS
    )


def test_a_sweep_shows_each_strengths_reply_and_marks_the_cliff(page, server_url):
    page.goto(f"{server_url}/steer?f=monoscope-demo/res1/7:clamp:1")
    page.fill("#gen-max-tokens", "8")
    page.click("#steer-sweep")  # nothing typed: the page says what it needs
    expect(page.locator("#steer-status")).to_have_text("Type a message to sweep.")
    page.fill("#steer-message", "What is your favourite food?")
    page.fill("#sweep-multipliers", "0, 2, 10")
    with page.expect_response("**/api/v1/steer/sweep") as answered:
        page.click("#steer-sweep")
    result = answered.value.json()
    rows = page.locator("#sweep-table tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first.locator("td").first).to_have_text("default")
    for row, reply in zip(rows.all()[1:], result["steered"], strict=True):
        expect(row.locator("td").first).to_have_text(f"{reply['multiplier']:g}×")
        expect(row.locator("td.reply")).to_have_text(reply["text"])
        past_cliff = reply["loss"] > 1.5 * result["default"]["loss"]
        assert ("cliff" in (row.get_attribute("class") or "")) == past_cliff
    expect(page.locator("#steered-messages .message")).to_have_count(0)  # the chat is untouched
    page.fill("#sweep-multipliers", "0, 99")
    page.click("#steer-sweep")
    expect(page.locator("#steer-status")).to_contain_text("multipliers")


def test_logprobs_turn_each_reply_token_into_a_span_with_both_sides_probabilities(page, server_url):
    page.goto(f"{server_url}/steer?f=monoscope-demo/res1/7:clamp:10")
    page.fill("#gen-temperature", "0")
    page.fill("#gen-max-tokens", "6")
    page.check("#gen-logprobs")
    with page.expect_response("**/api/v1/steer/logprobs") as answered:
        page.fill("#steer-message", "What is your favourite food?")
        page.press("#steer-message", "Enter")
    result = answered.value.json()
    for side in ("default", "steered"):
        spans = _reply(page, side).locator("span.tok")
        expect(spans).to_have_count(len(result[side]))
        first = result[side][0]
        title = spans.first.get_attribute("title")
        assert title.startswith(f"{100 * math.exp(first['logprob']):.1f}% here")
        assert json.dumps(first["top"][0][0]) in title  # the likeliest alternative is listed
    pushed = [
        i
        for i, t in enumerate(result["steered"])
        if t["logprob"] - t["other_logprob"] > math.log(2)
    ]
    marked = _reply(page, "steered").locator("span.tok")
    for i in pushed:
        expect(marked.nth(i)).to_have_class(re.compile(r"\bpushed\b"))
    if result["diverge_at"] is not None and result["diverge_at"] < len(result["steered"]):
        expect(marked.nth(result["diverge_at"])).to_have_class(re.compile(r"\bdiverge\b"))


def test_autosteer_tables_its_trials_and_links_the_best_as_a_preset(page, server_url):
    page.goto(f"{server_url}/steer")
    page.fill("#auto-description", "Golden Gate Bridge")
    page.click("#auto-run")
    expect(page.locator("#steer-status")).to_contain_text("a message to try it on")
    page.fill("#steer-message", "What is your favourite food?")
    with page.expect_response("**/api/v1/steer/auto", timeout=120_000) as answered:
        page.click("#auto-run")
    result = answered.value.json()
    rows = page.locator("#auto-table tbody tr")
    expect(rows).to_have_count(len(result["trials"]))
    expect(page.locator("#auto-table")).to_contain_text("Golden Gate Bridge")  # by its label
    if result["preset"]:
        page.click("#auto-preset")
        expect(page.locator("#steer-features tbody tr")).to_have_count(1)
    else:
        expect(page.locator("#auto-best")).to_contain_text("No fluent trial")


def test_a_sweep_link_opens_with_its_multipliers_and_message_and_runs_them(page, server_url):
    page.goto(
        f"{server_url}/steer?f=monoscope-demo/res1/7:clamp:2&sweep=0,3&frozen=1&seed=4"
        "&message=What+is+your+favourite+food%3F"
    )
    expect(page.locator("#sweep-multipliers")).to_have_value("0, 3")
    expect(page.locator("#gen-frozen")).to_be_checked()
    expect(page.locator("#gen-seed")).to_have_value("4")
    expect(page.locator("#steer-message")).to_have_value("What is your favourite food?")
    with page.expect_request("**/api/v1/steer/sweep") as sent:
        page.click("#steer-sweep")
    assert sent.value.post_data_json["multipliers"] == [0, 3]
    assert sent.value.post_data_json["seed"] == 4
    expect(page.locator("#sweep-table tbody tr")).to_have_count(3, timeout=REPLY_TIMEOUT_MS)
