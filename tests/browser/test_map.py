"""The feature map in headless Chromium: zoom to a feature, hover it, light up a search, recolour,
click through to the feature page."""

import re

import pytest
from playwright.sync_api import expect

from tests.web_world import golden_gate_feature

pytestmark = pytest.mark.browser


def test_the_map_finds_a_feature_lights_up_a_search_and_opens_the_feature(
    page, server_url, demo_workspace
):
    bridge, _ = golden_gate_feature(demo_workspace)
    page.goto(f"{server_url}/monoscope-demo/res1/map?focus={bridge}")
    canvas = page.locator("#feature-map")
    expect(canvas).to_have_attribute("data-drawn", str(demo_workspace.saes["res1"].d_sae))
    box = canvas.bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*centre)  # the focused feature is drawn at the centre
    tip = page.locator(".map-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"#{bridge}")
    expect(tip).to_contain_text("Golden Gate Bridge")

    page.fill(".map-controls input[name=q]", "golden gate")
    expect(page.locator(".map-status")).to_have_text("1 matching feature lit up")  # words only
    expect(page).to_have_url(re.compile(r"q=golden\+gate"))
    page.mouse.move(centre[0] + 1, centre[1])
    expect(tip).to_contain_text("matches")

    page.select_option(".map-controls select[name=colour]", "labelled")
    expect(page).to_have_url(re.compile(r"colour=labelled"))
    expect(page.locator(".map-legend")).to_contain_text("labelled")

    page.mouse.click(*centre)
    expect(page).to_have_url(re.compile(rf"/monoscope-demo/res1/{bridge}$"))
    expect(page.get_by_role("link", name="On the map")).to_have_attribute(
        "href", re.compile(rf"/monoscope-demo/res1/map\?focus={bridge}$")
    )
    assert page.refused == [] and page.dialogs == []
    outside = [u for u in page.requested if not u.startswith((server_url, "data:"))]
    assert outside == []


def test_dragging_and_zooming_move_the_map(page, server_url):
    page.goto(f"{server_url}/monoscope-demo/res1/map")
    canvas = page.locator("#feature-map")
    expect(canvas).to_have_attribute("data-drawn", re.compile(r"\d+"))
    before = canvas.screenshot()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -600)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2 + 40)
    page.mouse.up()
    page.wait_for_timeout(200)
    dragged = canvas.screenshot()
    assert dragged != before
    canvas.focus()
    page.keyboard.press("-")
    page.keyboard.press("ArrowLeft")
    page.wait_for_timeout(200)
    assert canvas.screenshot() != dragged
