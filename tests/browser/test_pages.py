"""The site in headless Chromium: search, open a feature, hover, test text, paginate, lists."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ACCOUNT
from tests.web_world import IMG, SCRIPT

pytestmark = pytest.mark.browser


def test_search_then_open_a_feature_and_hover_a_token(page, server_url):
    page.goto(server_url)
    page.fill(".big-search input[name=q]", "golden gate")
    page.press(".big-search input[name=q]", "Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=golden\+gate"))
    results = page.locator(".result-label")
    expect(results.first).to_be_visible()
    page.locator(".result-label", has_text="Golden Gate Bridge in the fog").click()
    expect(page).to_have_url(re.compile(r"/tiny/res1/1$"))
    page.locator(".neighbours a, .actions a[rel=prev]").first.click()
    expect(page).to_have_url(re.compile(r"/tiny/res1/0$"))
    expect(page.locator("h1")).to_contain_text("<b>bold</b>")  # shown as text, not markup
    peak = page.locator(".top-examples .tok.peak").first
    expect(peak).to_have_text(SCRIPT)  # hostile token text is visible text
    peak.hover()
    readout = page.locator("#token-readout")
    expect(readout).to_be_visible()
    expect(readout).to_contain_text("5.000")
    assert page.locator("img").count() == 0 and page.dialogs == []
    assert IMG in page.locator(".logits").inner_text()
    assert page.evaluate("typeof htmx") == "object"  # served locally from the npm package
    outside = [u for u in page.requested if not u.startswith((server_url, "data:"))]
    assert outside == []


def test_test_your_text_box_shows_the_feature_on_each_token(page, server_url):
    page.goto(f"{server_url}/monoscope-demo/res1/7")
    page.fill(".test-text textarea", "The Golden Gate Bridge is red.")
    page.click(".test-text button[type=submit]")
    cells = page.locator("#test-result .tok")
    expect(cells.first).to_be_visible()
    assert cells.count() == 8  # BOS and seven tokens
    expect(page.locator("#test-result")).to_contain_text("of its stored max")


def test_typed_text_marks_its_peak_on_the_activation_histogram(page, server_url, demo_workspace):
    from tests.web_world import golden_gate_feature

    bridge, _ = golden_gate_feature(demo_workspace)
    page.goto(f"{server_url}/monoscope-demo/res1/{bridge}")
    expect(page.locator("#activation-chart .mark-label")).to_have_text(["max"])
    page.fill(".test-text textarea", "We walked across the Golden Gate Bridge.")
    page.click(".test-text button[type=submit]")
    expect(page.locator("#activation-chart .mark-label.highlighted")).to_have_text("your text")
    expect(page.locator(".test-text #activation-chart")).to_have_count(0)  # swapped in place


def test_search_finds_a_label_by_its_meaning(page, server_url):
    page.goto(f"{server_url}/search")
    page.fill(".search-form input[name=q]", "mist hanging over a suspension bridge")
    page.press(".search-form input[name=q]", "Enter")
    first = page.locator("li.result").first
    expect(first.locator("a.result-label")).to_have_text("Golden Gate Bridge in the fog")
    expect(first.locator(".match-kind")).to_contain_text("similar meaning")
    first.locator("a.result-label").click()
    expect(page).to_have_url(re.compile(r"/tiny/res1/1$"))


def test_the_context_control_widens_examples_in_place(page, server_url):
    page.goto(f"{server_url}/tiny/res1/0?context=narrow")
    expect(page.locator(".top-examples .cut")).to_have_count(5)
    page.evaluate("window.sameDocument = true")
    page.click(".context-control >> text=whole")
    expect(page).to_have_url(re.compile(r"context=whole"))
    expect(page.locator(".top-examples .cut")).to_have_count(0)
    expect(page.locator(".context-control .selected")).to_have_text("whole")
    assert page.evaluate("window.sameDocument") is True


def test_the_feature_table_paginates_and_filters_in_place(page, server_url):
    page.goto(f"{server_url}/monoscope-demo/res1")
    first = page.locator("#feature-table tbody tr").first
    expect(first.locator("td").first).to_have_text("0")
    page.evaluate("window.sameDocument = true")  # survives only if htmx swaps in place
    page.click("#feature-table a.next")
    expect(page).to_have_url(re.compile(r"after=49"))  # htmx pushed the shareable URL
    expect(page.locator("#feature-table tbody tr").first.locator("td").first).to_have_text("50")
    page.fill("#feature-filters input[name=q]", "seven")
    expect(page.locator("#feature-table tbody tr")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"q=seven"))
    assert page.evaluate("window.sameDocument") is True
    page.reload()  # the URL alone restores the view
    expect(page.locator("#feature-table tbody tr")).to_have_count(1)


def test_text_search_links_tokens_to_their_features(page, server_url):
    page.goto(f"{server_url}/search/text")
    page.fill(".text-form textarea", "User: Tell me about the Golden Gate Bridge.")
    page.click(".text-form button[type=submit]")
    tokens = page.locator(".heat a.tok")
    expect(tokens).to_have_count(11)
    tokens.nth(8).click()
    expect(page.locator("#token-panel h2")).to_contain_text("Token 8")
    expect(page).to_have_url(re.compile(r"pos=8"))
    page.locator("#token-panel tbody a").first.click()
    expect(page).to_have_url(re.compile(r"/monoscope-demo/res1/\d+$"))


def test_sign_in_add_features_to_a_list_and_reorder(page, server_url):
    page.goto(f"{server_url}/tiny/res1/1")
    expect(page.locator(".feature-lists")).to_contain_text("Sign in")  # loaded by htmx
    page.locator(".feature-lists").get_by_role("link", name="Sign in").click()
    page.fill("input[name=name]", ACCOUNT[0])
    page.fill("input[name=password]", ACCOUNT[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server_url}/tiny/res1/1")
    page.fill(".add-to-list input[name=new_title]", "Browser list")
    page.fill(".add-to-list input[name=note]", "<b>not bold</b>")
    page.click(".add-to-list button")
    expect(page.locator(".feature-lists")).to_contain_text("On Browser list")
    page.goto(f"{server_url}/search?q=golden")
    page.locator("details.add-list summary").first.click()
    box = page.locator("details.add-list").first
    box.locator("select[name=list]").select_option(label="Browser list")
    box.get_by_role("button", name="Add to list").click()
    page.goto(f"{server_url}/lists")
    page.get_by_role("link", name="Browser list").click()
    items = page.locator(".list-item .item-head a")
    expect(items).to_have_count(2)
    second = items.nth(1).inner_text()
    page.locator(".list-item").nth(1).get_by_role("button", name="move up").click()
    expect(page.locator(".list-item .item-head a").first).to_have_text(second)
    expect(page.locator(".list-item textarea").nth(1)).to_have_value("<b>not bold</b>")
    assert page.locator(".list-item b").count() == 0 and page.dialogs == []


def test_review_a_label_and_it_becomes_the_shown_one(page, server_url):
    page.goto(f"{server_url}/login?next=/tiny/res1/5")
    page.fill("input[name=name]", ACCOUNT[0])
    page.fill("input[name=password]", ACCOUNT[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server_url}/tiny/res1/5")
    page.fill(".label-add input[name=text]", "fog over the bay")
    page.get_by_role("button", name="Add label").click()
    row = page.locator("section.labels tbody tr", has_text="fog over the bay")
    row.get_by_role("button", name="verify").click()
    expect(page.locator("h1")).to_contain_text("fog over the bay")  # verified leads
    page.locator("details.history summary").click()
    expect(page.locator(".label-history")).to_contain_text("verified")
    page.goto(f"{server_url}/dashboard")
    expect(page.locator(".dashboard-grid")).to_contain_text("fog over the bay")


PAGES = [
    "/",
    "/tiny/res1",
    "/tiny/res1/0",
    "/tiny/res1/0?embed=1",
    "/search?q=golden",
    "/search/text?text=The+Golden+Gate",
    "/steer",
    "/inspect?text=The+cat+sat",
    "/dashboard",
    "/lists",
    "/login",
]


def test_every_page_runs_under_its_content_security_policy(page, server_url):
    for path in PAGES:
        answer = page.goto(server_url + path)
        assert "script-src 'self'" in answer.headers["content-security-policy"], path
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert ("x-frame-options" in answer.headers) != path.endswith("embed=1")
    page.goto(f"{server_url}/steer")
    assert page.evaluate("typeof htmx") == "object"
    assert page.refused == []


def test_the_api_docs_render_offline_from_the_local_swagger_ui(page, server_url):
    page.goto(f"{server_url}/docs")
    expect(page.locator(".opblock").first).to_be_visible()  # operations read from /openapi.json
    expect(page.locator("#swagger-ui")).to_contain_text("/api/v1/steer")
    outside = [u for u in page.requested if not u.startswith((server_url, "data:"))]
    assert outside == [] and page.refused == []
