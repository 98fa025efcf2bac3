"""The attribution-graph page in headless Chromium, on the demo model with its transcoders:
draw, pin from the table and from the graph, intervene, download the file."""

import json
import re
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from app.core.workspace import Workspace
from app.db.engine import connect, migrate
from app.demo import DEMO_MODEL, DEMO_TRANSCODERS
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import serving

pytestmark = pytest.mark.browser
STORY = "Tom's sister was Mia. Mia loved chess. What did Tom's sister love? Tom's sister loved"


@pytest.fixture(scope="module")
def graph_server(tmp_path_factory):
    layers = [str(DEMO_TRANSCODERS / f"layer_{n}") for n in range(4)]
    workspace = Workspace.load(str(DEMO_MODEL), layers, device="cpu")
    url = f"sqlite:///{tmp_path_factory.mktemp('graph') / 'monoscope.db'}"
    engine = connect(url)
    migrate(engine)
    engine.dispose()
    with serving(create_app(Settings(database_url=url), workspace=workspace)) as base:
        yield base


def test_pin_from_the_table_and_the_graph_then_intervene(page, graph_server):
    page.goto(f"{graph_server}/graph?text={quote(STORY)}")
    expect(page.locator(".graph-scores")).to_contain_text("Replacement score")
    features = page.locator("svg.graph .graph-node.feature")
    assert features.count() >= 20
    assert (
        page.locator("svg.graph .graph-node.logit")
        .first.locator("title")
        .text_content()
        .startswith('Output " chess"')
    )
    assert "activation" in features.first.locator("title").text_content()
    # Pin the most influential feature from the table.
    first = page.locator(".graph-features tbody tr").first
    pinned_id = first.locator("a.pin").get_attribute("data-node")
    first.locator("a.pin").click()
    expect(page).to_have_url(re.compile(r"pinned=" + re.escape(pinned_id)))
    expect(page.locator(".graph-features tbody tr.pinned")).to_have_count(1)
    expect(page.locator(".group-members li")).to_have_count(1)
    # Shift-click another feature in the drawing: pinned too, the first kept.
    other = page.locator("svg.graph .graph-node.feature:not(.pinned)").first
    other_id = other.get_attribute("data-node")
    other.locator("circle").click(modifiers=["Shift"])
    expect(page.locator(".group-members li")).to_have_count(2)
    assert pinned_id in page.url and other_id in page.url
    expect(page.locator(f'svg.graph .graph-node.pinned[data-node="{other_id}"]')).to_have_count(1)
    expect(page.locator(".pinned-subgraph .graph-scores")).to_contain_text("inputs inside")
    # Group both into a supernode: ringed in the drawing, one unit in the subgraph.
    page.locator(".group-form input[name=member]").nth(0).check()
    page.locator(".group-form input[name=member]").nth(1).check()
    page.locator(".group-form input[name=new_group]").fill("sister")
    page.locator(".group-form button").click()
    expect(page.locator(".supernodes strong")).to_have_text("sister")
    expect(page.locator("svg.graph .graph-node.grouped")).to_have_count(2)
    expect(page.locator("svg.subgraph .subgraph-unit.supernode")).to_have_count(1)
    assert "groups=sister" in page.url
    # Zero them in the real model: the target's probability before and after.
    page.locator(".intervene-form input[value=zero]").check()
    page.locator(".intervene-form button").click()
    expect(page.locator(".intervention")).to_contain_text("Zeroed")
    expect(page.locator(".intervention")).to_contain_text("was 0.")
    assert page.dialogs == [] and page.refused == []
    assert all(url.startswith(graph_server) for url in page.requested)


def test_the_graph_file_downloads_as_circuit_tracer_writes_it(page, graph_server):
    page.goto(f"{graph_server}/graph?text={quote(STORY)}")
    href = page.locator("a.graph-file").get_attribute("href")
    response = page.request.get(href if href.startswith("http") else f"{graph_server}{href}")
    assert response.ok and "attachment" in response.headers["content-disposition"]
    graph = json.loads(response.text())
    assert graph["metadata"]["schema_version"] == 1 and graph["links"]


def test_without_transcoders_the_page_says_what_to_load(page, server_url):
    page.goto(f"{server_url}/graph")
    expect(page.locator(".empty")).to_contain_text("transcoder for every layer")


def test_a_logit_difference_target_from_the_form(page, graph_server):
    """Trace why the model prefers ' chess' to ' bread', pin the strongest feature, zero it: the
    logit difference before and after."""
    page.goto(f"{graph_server}/graph")
    page.locator("textarea[name=text]").fill(STORY)
    page.locator("input[name=target]").fill(" chess")
    page.locator("input[name=versus]").fill(" bread")
    page.locator(".text-form button").click()
    logit = page.locator("svg.graph .graph-node.logit")
    expect(logit).to_have_count(1)
    assert "logit(' chess') - logit(' bread')" in logit.locator("title").text_content()
    page.locator(".graph-features tbody tr a.pin").first.click()
    page.locator(".intervene-form button").click()
    expect(page.locator(".intervention")).to_contain_text("logit difference")
    assert page.dialogs == [] and page.refused == []
