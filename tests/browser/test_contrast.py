"""Contrast in headless Chromium: two sets in, ranked features out, one click to steer."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

BRIDGE = "\n".join(
    [
        "We walked across the Golden Gate Bridge in the fog.",
        "The Golden Gate Bridge is red and very long.",
        "From the hill we saw the Golden Gate Bridge.",
    ]
)
FOOD = "\n".join(
    [
        "We ate pizza in the kitchen.",
        "Mia made soup with carrots for lunch.",
        "The bread was warm and the cheese was soft.",
    ]
)


def test_contrast_two_sets_and_steer_with_the_top_features(page, server_url):
    page.goto(f"{server_url}/steer")
    page.get_by_role("link", name="Contrast").click()
    page.fill("textarea[name=a]", BRIDGE)
    page.fill("textarea[name=b]", FOOD)
    page.get_by_role("button", name="Contrast").click()
    side_a = page.locator("section.contrast-side").first
    expect(side_a.locator("h2")).to_have_text("More in set A")
    expect(side_a).to_contain_text("Golden Gate Bridge")  # the bridge feature's stored label
    rows = side_a.locator("tbody tr")
    assert rows.count() >= 3
    page.screenshot(path="/tmp/contrast.png", full_page=True)
    side_a.get_by_role("link", name="Steer with the top 3").click()
    expect(page).to_have_url(re.compile(r"/steer\?f=monoscope-demo%2Fres\d%2F\d+%3Aclamp"))
    features = page.locator("#steer-features tbody tr")
    expect(features).to_have_count(3)
    expect(features.first.get_by_role("combobox").first).to_have_value("clamp")
    expect(features.first.locator("select.units")).to_have_value("raw")
    # and the set survives in the URL: back, the same sets and result
    page.go_back()
    expect(page.locator("textarea[name=a]")).to_have_value(BRIDGE)
