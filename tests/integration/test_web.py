"""Pages and the JSON API through the test client, on SQLite and PostgreSQL."""

import re

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import event

from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed
from tests.web_world import D_SAE, DEAD, HOSTILE_LABEL, IMG, SCRIPT, build_world


@pytest.fixture
def client(engine):
    with session_scope(engine) as session:
        build_world(session)
    url = engine.url.render_as_string(hide_password=False)
    with TestClient(create_app(Settings(database_url=url, model=None, saes=[]))) as client:
        yield client


def assert_escaped(body: str) -> None:
    """Hostile text appears only escaped: no live tag or handler from token or label text."""
    assert SCRIPT not in body and "<img" not in body and "<b>bold" not in body
    assert "onerror=alert(1)>" not in body  # the quote and bracket stay text


def test_home_lists_each_sae_with_its_health(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "tiny / res1" in page.text
    assert "81.0%" in page.text and "93.0%" in page.text  # variance explained, CE recovered
    assert "12.5" in page.text  # L0
    assert re.search(r"50\.0%.*labelled", parsed(page.text).get_text(), re.S)  # 3 of 6 labelled


def test_sae_page_shows_metrics_charts_and_the_table(client):
    page = client.get("/tiny/res1")
    assert page.status_code == 200
    assert "<svg" in page.text and "Feature density" in page.text
    assert "Headline label scores" in page.text
    assert escape(HOSTILE_LABEL) in page.text
    assert_escaped(page.text)
    doc = parsed(page.text)
    assert doc.title.string == "tiny / res1 · Monoscope"
    assert doc.select_one('meta[property="og:description"]')["content"].startswith("6 features")


def _indices(body: str) -> list[int]:
    return [int(a.string) for a in parsed(body).select('td.num > a[href*="/tiny/res1/"]')]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, [0, 1, 2, 3, 4, 5]),
        ({"sort": "density"}, [2, 0, 5, 1, 4, 3]),  # descending by default
        ({"sort": "density", "order": "asc"}, [3, 4, 1, 5, 0, 2]),
        ({"sort": "score"}, [0, 1, 2]),  # headline: detection 0.55 for #2 beats its keyword score
        ({"labelled": "no"}, [3, 4, 5]),
        ({"alive": "no"}, [DEAD]),
        ({"min_density": 0.004, "max_density": 0.02}, [0, 1, 5]),
        ({"q": "fog"}, [1]),
        ({"q": "bridg"}, [1]),  # prefix
        ({"q": "", "min_density": "", "max_density": "", "order": ""}, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_the_feature_table_sorts_and_filters_from_the_url(client, params, expected):
    page = client.get("/tiny/res1", params=params)
    assert page.status_code == 200
    assert _indices(page.text) == expected


def test_keyset_pages_follow_next_links_through_every_feature(client):
    seen, url = [], "/tiny/res1?sort=density&limit=25"
    client.get(url)
    while url:
        page = client.get(url, headers={"HX-Request": "true", "HX-Target": "feature-table"})
        assert page.status_code == 200
        assert "<html" not in page.text  # htmx gets the table block only
        seen += _indices(page.text)
        found = parsed(page.text).select_one('a.next[rel="next"]')
        url = found["href"] if found else None
    assert sorted(seen) == list(range(D_SAE))
    api, after, walked = "/api/v1/saes/tiny/res1/features", None, []
    while True:
        body = client.get(
            api, params={"sort": "density", "limit": 25} | ({"after": after} if after else {})
        ).json()
        walked += [f["index"] for f in body["features"]]
        if not (after := body["next_cursor"]):
            break
    assert walked == [2, 0, 5, 1, 4, 3]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 7},
        {"sort": "colour"},
        {"after": "x:y", "sort": "density"},
        {"min_density": "lots"},
    ],
)
def test_bad_table_parameters_get_a_clear_4xx_page(client, params):
    page = client.get("/tiny/res1", params=params)
    assert 400 <= page.status_code < 500
    assert "That did not work" in page.text and "Traceback" not in page.text


def test_the_feature_page_says_what_each_score_measures(client):
    """Under the labels, one line per method of the scores shown, in the order they rank labels:
    the keyword score says it is a word match, not a simulation."""
    methods = parsed(client.get("/tiny/res1/2").text).select(".score-methods dt")
    assert [m.get_text() for m in methods] == ["detection", "keyword"]
    meaning = methods[1].find_next_sibling("dd").get_text()
    assert "label's own words" in meaning and "offline" in meaning
    assert not parsed(client.get("/tiny/res1/4").text).select(".score-methods")  # unlabelled


def test_the_context_control_sets_how_much_of_each_example_shows(client):
    """Each of the 12-token stored contexts peaks at token 5: narrow shows 8 before and 4 after
    (cut on the right), whole shows every token, and the choice survives embedding."""

    def shown(**params):
        doc = parsed(client.get("/tiny/res1/0", params=params).text)
        return [len(e.select(".tok")) for e in doc.select(".example")], doc

    narrow, doc = shown(context="narrow")
    whole, whole_doc = shown(context="whole")
    assert narrow == [10] * 8 and whole == [12] * 8
    assert len(doc.select(".example .cut")) == 8 and not whole_doc.select(".example .cut")
    assert doc.select_one(".context-control .selected").get_text() == "narrow"
    assert shown()[1].select_one(".context-control .selected").get_text() == "wide"
    _, embedded = shown(context="whole", embed=1)
    links = [a["href"] for a in embedded.select(".context-control a")]
    assert len(links) == 3 and all("embed=1" in h and "context=" in h for h in links)
    bad = client.get("/tiny/res1/0", params={"context": "huge"})
    assert bad.status_code == 422 and "context" in bad.text and "Traceback" not in bad.text


def test_feature_page_shows_the_whole_dashboard_with_hostile_text_escaped(client):
    page = client.get("/tiny/res1/0")
    assert page.status_code == 200
    body = page.text
    assert_escaped(body)
    assert escape(SCRIPT) in body and escape(IMG) in body
    # Labels best first, the failure shown as one.
    assert body.index(escape(HOSTILE_LABEL)) < body.index("an older, weaker label")
    assert "the explainer returned nothing" in body
    doc = parsed(body)
    assert len(doc.select(".example")) == 8
    assert len(doc.select(".tok.peak")) == 8  # each example marks its max token
    assert "Activation histogram" in body and "<rect" in body
    assert "promotes" in body and "suppresses" in body
    logit_chart = next(c for c in doc.select(".chart") if "Logit effects over" in c.get_text())
    assert len(logit_chart.select("rect")) >= 8  # a bar per non-empty bin
    assert "Logit effects over" not in client.get("/tiny/res1/1").text  # harvested without one
    assert '/tiny/res1/1">#1</a>' in body and "Golden Gate Bridge in the fog" in body  # neighbour
    assert doc.select_one('a[rel="next"]')["href"].endswith("/tiny/res1/1") and "‹ #" not in body
    og = doc.select_one('meta[property="og:description"]')["content"]
    assert og.startswith(f"“{HOSTILE_LABEL}”")
    assert "Test your own text" not in body  # no model loaded here


def test_embed_mode_is_just_the_dashboard(client):
    page = client.get("/tiny/res1/0", params={"embed": 1})
    assert page.status_code == 200
    assert 'class="embed"' in page.text and "site-header" not in page.text
    assert "Top activations" in page.text


def test_a_dead_feature_says_so(client):
    page = client.get(f"/tiny/res1/{DEAD}")
    assert page.status_code == 200
    assert "it is dead" in page.text and "Top activations" not in page.text


@pytest.mark.parametrize(
    "path, message",
    [
        ("/tiny/res9", "No SAE"),
        ("/nobody/res1/0", "No SAE"),
        ("/tiny/res1/6", "features 0 to 5"),
        ("/tiny/res1/abc", "not a feature index"),
        ("/tiny/res1/0/extra/parts", "no page at this address"),
        ("/api/v1/features/tiny/res1/99", "no feature 99"),
    ],
)
def test_unknown_models_saes_and_indices_are_404s(client, path, message):
    page = client.get(path)
    assert page.status_code == 404
    assert message in page.text


def test_label_search_ranks_and_shows_snippets(client):
    page = client.get("/search", params={"q": "golden gate"})
    assert page.status_code == 200
    doc = parsed(page.text)
    results = [a["href"] for a in doc.select("a.result-label")]
    assert sorted(results) == ["/tiny/res1/0", "/tiny/res1/1"]
    assert doc.select(".snippet")
    assert_escaped(page.text)
    assert "<title>“golden gate” · Search · Monoscope</title>" in page.text
    filtered = client.get("/search", params={"q": "golden", "sae": "nope"})
    assert "No label matches" in filtered.text


@pytest.mark.parametrize("q", [SCRIPT, IMG, "'; DROP TABLE features; --", '"unbalanced', "x" * 500])
def test_search_takes_hostile_queries_as_text(client, q):
    page = client.get("/search", params={"q": q})
    assert page.status_code == 200
    assert_escaped(page.text)
    assert client.get("/api/v1/search", params={"q": q}).status_code == 200


def test_the_api_mirrors_the_pages(client):
    saes = client.get("/api/v1/saes").json()
    assert [(s["model"], s["name"], s["labelled"]) for s in saes] == [("tiny", "res1", 3)]
    feature = client.get("/api/v1/features/tiny/res1/0").json()
    assert feature["label"] == HOSTILE_LABEL
    assert [label["text"] for label in feature["labels"]][:2] == [
        HOSTILE_LABEL,
        "an older, weaker label",
    ]
    assert len(feature["top_examples"]) == 5 and len(feature["interval_examples"]) == 3
    assert feature["top_examples"][0]["tokens"][5] == SCRIPT  # raw in JSON, as data
    assert feature["neighbours"][0] == {
        "index": 1,
        "cosine": 0.62,
        "label": "Golden Gate Bridge in the fog",
    }
    hits = client.get("/api/v1/search", params={"q": "fog"}).json()
    assert [(h["index"], h["url"].endswith("/tiny/res1/1")) for h in hits] == [(1, True)]
    schema = client.get("/openapi.json").json()
    documented = {
        "/api/v1/saes",
        "/api/v1/features/{model}/{sae}/{index}",
        "/api/v1/search",
        "/api/v1/activations",
        "/api/v1/saes/{model}/{sae}/features",
    }
    assert documented <= set(schema["paths"])
    # One name per schema: FastAPI qualifies clashing names with their module (app__web__...).
    assert not [name for name in schema["components"]["schemas"] if name.startswith("app__")]
    live = client.post("/api/v1/activations", json={"text": "hello"})
    assert live.status_code == 409 and "no model" in live.json()["detail"]


def test_text_search_without_a_model_explains_itself(client):
    page = client.get("/search/text")
    assert page.status_code == 200 and "no model and SAE loaded" in page.text
    assert client.get("/search/text", params={"text": "hi"}).status_code == 409


def test_a_feature_page_costs_at_most_three_round_trips(client, engine):
    client.get("/tiny/res1/0")  # warms the vocabulary cache
    statements = []
    app_engine = client.app.state.engine

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(app_engine, "before_cursor_execute", count)
    try:
        assert client.get("/tiny/res1/0").status_code == 200
    finally:
        event.remove(app_engine, "before_cursor_execute", count)
    queries = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "ROLLBACK"))]
    assert len(queries) <= 3, queries
