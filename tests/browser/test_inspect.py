"""The inspect page in headless Chromium: ablate one feature, then several together."""

import re
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
PROMPT = "User: What colour is a banana?\nAssistant: A banana is"


def test_ablate_one_then_several_features(page, server_url):
    page.goto(f"{server_url}/inspect?text={quote(PROMPT)}&exact=8")
    expect(page.locator(".predictions h2")).to_contain_text("yellow")
    load_bearing = page.locator(".inspect-table").nth(1)
    first = load_bearing.locator("tbody tr").first
    index = first.locator("input[name=zero]").get_attribute("value")
    first.get_by_role("link", name="ablate").click()
    expect(page).to_have_url(re.compile(rf"ablate={index}$"))
    expect(page.locator(".ablation")).to_contain_text(f"#{index}")
    rows = page.locator(".inspect-table").nth(1).locator("tbody tr")
    second = rows.nth(1).locator("input[name=zero]").get_attribute("value")
    rows.nth(1).locator("input[name=zero]").check()  # the first stays checked from the URL
    page.click("button.ablate-checked")
    expect(page).to_have_url(re.compile(rf"ablate={index}%2C{second}|ablate={second}%2C{index}"))
    expect(page.locator(".ablation")).to_contain_text(f"#{second}")
    expect(page.locator(".ablation")).to_contain_text(f"#{index}")
    assert page.dialogs == []


def test_the_chain_links_to_the_earlier_features(page, server_url):
    story = "Tom's sister was Mia. Mia loved chess. What did Tom's sister love? Tom's sister loved"
    page.goto(f"{server_url}/inspect?text={quote(story)}&exact=0&chain=2")
    expect(page.locator(".predictions h2")).to_contain_text("chess")
    expect(page.locator(".chain-link")).to_have_count(2)
    source = page.locator(".chain-link").first.locator(".chain-table tbody tr td a").first
    index = source.inner_text()
    source.click()
    expect(page).to_have_url(re.compile(rf"/monoscope-demo/res1/{index}$"))
    assert page.dialogs == []
