"""Feature maps end to end on both databases: the job places alive features from the SAE's
decoder, the API serves them as columns, pages link to the map and explain a missing one."""

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.errors import MonoscopeError
from app.db.engine import session_scope
from app.db.maps import map_points
from app.db.queries import find_sae
from app.pipeline.config import MapConfig
from app.pipeline.feature_map import MapJob
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import parsed, random_sae
from tests.web_world import D_SAE, DEAD, HOSTILE_LABEL, build_world

pytestmark = pytest.mark.slow  # UMAP's numba compilation: ~15 s in a fresh process

CONFIG = MapConfig("tiny", "res1", progress=False)


@pytest.fixture
def world(engine):
    with session_scope(engine) as session:
        build_world(session)
    return engine


@pytest.fixture
def sae():
    return random_sae(d_in=16, d_sae=D_SAE)


def _client(engine) -> TestClient:
    url = engine.url.render_as_string(hide_password=False)
    return TestClient(create_app(Settings(database_url=url, model=None, saes=[])))


def test_the_job_places_every_alive_feature_and_leaves_the_dead_off(world, sae):
    result = MapJob(CONFIG, world, sae).run()
    assert (result.placed, result.left_off) == (D_SAE - 1, 1)
    with session_scope(world) as session:
        row = find_sae(session, "tiny", "res1")
        points = map_points(session, row.id)
        layout = row.map_layout
    assert DEAD not in points.index and sorted(points.index) == [0, 1, 2, 4, 5]
    assert all(0.0 <= v <= 1.0 for v in points.x + points.y)
    assert max(max(points.x), max(points.y)) == pytest.approx(1.0)  # the longer side spans [0, 1]
    assert layout["method"] == "umap" and layout["features"] == D_SAE - 1
    assert layout["n_neighbors"] == 15 and layout["seed"] == 0

    again = MapJob(CONFIG, world, sae).run()  # same seed, same map, written over the last
    with session_scope(world) as session:
        redrawn = map_points(session, find_sae(session, "tiny", "res1").id)
    assert again.placed == result.placed and (redrawn.x, redrawn.y) == (points.x, points.y)


def test_a_resuming_job_keeps_the_map_and_a_new_seed_moves_it(world, sae):
    MapJob(CONFIG, world, sae).run()
    with session_scope(world) as session:
        first = map_points(session, find_sae(session, "tiny", "res1").id)
    kept = MapJob(MapConfig("tiny", "res1", redraw=False, progress=False), world, sae).run()
    assert kept.placed == D_SAE - 1 and kept.seconds == 0.0
    MapJob(MapConfig("tiny", "res1", seed=7, progress=False), world, sae).run()
    with session_scope(world) as session:
        moved = map_points(session, find_sae(session, "tiny", "res1").id)
    assert moved.index == first.index and (moved.x, moved.y) != (first.x, first.y)


def test_another_sae_or_an_unknown_one_is_refused(world):
    with pytest.raises(MonoscopeError, match="not the same SAE"):
        MapJob(CONFIG, world, random_sae(d_in=16, d_sae=D_SAE + 2)).run()
    with pytest.raises(MonoscopeError, match="no SAE tiny/nope"):
        MapJob(MapConfig("tiny", "nope", progress=False), world).run()
    with pytest.raises(MonoscopeError, match="min-dist"):
        MapConfig("tiny", "res1", min_dist=2.0)
    with session_scope(world) as session:
        assert find_sae(session, "tiny", "res1").map_layout == {}  # nothing half-written


def test_before_a_map_the_pages_say_how_to_draw_one(world):
    with _client(world) as client:
        answer = client.get("/api/v1/saes/tiny/res1/map")
        assert answer.status_code == 404
        assert "monoscope map --model tiny --sae res1" in answer.json()["detail"]
        page = parsed(client.get("/tiny/res1/map").text)
        assert page.select_one("#feature-map") is None
        assert "monoscope map --model tiny --sae res1" in page.select_one("p.empty").text
        sae_page = parsed(client.get("/tiny/res1").text)
        assert sae_page.select_one(".map-link").text == "Feature map (not drawn yet)"
        assert not parsed(client.get("/tiny/res1/0").text).find("a", string="On the map")


def test_the_api_serves_columns_and_the_pages_link_to_the_map(world, sae):
    MapJob(CONFIG, world, sae).run()
    with _client(world) as client:
        body = client.get("/api/v1/saes/tiny/res1/map").json()
        assert body["index"] == [0, 1, 2, 4, 5]
        assert len(body["x"]) == len(body["y"]) == len(body["density"]) == 5
        assert body["label"][0] == HOSTILE_LABEL  # JSON text; the page sets it as textContent
        assert body["label"][3] is None and body["score"][3] is None  # feature 4: no label
        assert body["density"][1] == 0.005 and body["layout"]["features"] == 5

        page = parsed(client.get("/tiny/res1/map", params={"colour": "score", "focus": 2}).text)
        canvas = page.select_one("#feature-map")
        assert canvas["data-points"].endswith("/api/v1/saes/tiny/res1/map")
        assert canvas["data-focus"] == "2"
        assert (
            canvas["data-feature"].replace(canvas["data-placeholder"], "4").endswith("/tiny/res1/4")
        )
        assert page.select_one("select[name=colour] option[selected]")["value"] == "score"
        assert "5 of 6 features" in page.select_one("p.muted").text

        feature = parsed(client.get("/tiny/res1/2").text)
        assert feature.find("a", string="On the map")["href"].endswith("/tiny/res1/map?focus=2")
        dead = parsed(client.get(f"/tiny/res1/{DEAD}").text)
        assert not dead.find("a", string="On the map")  # dead features are not on it
        assert parsed(client.get("/tiny/res1").text).select_one(".map-link").text == "Feature map"


def test_hits_name_the_features_whose_labels_match(world, sae):
    MapJob(CONFIG, world, sae).run()
    with _client(world) as client:
        hits = client.get("/api/v1/saes/tiny/res1/map/hits", params={"q": "golden gate"}).json()
        assert sorted(hits["index"]) == [0, 1]  # the hostile label names the bridge too
        assert client.get("/api/v1/saes/tiny/res1/map/hits", params={"q": "zebra"}).json() == {
            "index": []
        }
        assert client.get("/api/v1/saes/tiny/res1/map/hits", params={"q": ""}).status_code == 422
        assert client.get("/api/v1/saes/tiny/nope/map/hits", params={"q": "a"}).status_code == 404


def test_the_decoder_decides_the_layout(world):
    """Two groups of alive features with opposite decoder directions land apart."""
    sae = random_sae(d_in=16, d_sae=D_SAE)
    with torch.no_grad():
        direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
        for i, sign in zip([0, 1, 2, 4, 5], [1, 1, 1, -1, -1], strict=True):
            sae.W_dec[i] = sign * direction + 0.01 * torch.randn(16)
    MapJob(CONFIG, world, sae).run()
    with session_scope(world) as session:
        points = map_points(session, find_sae(session, "tiny", "res1").id)
    where = dict(zip(points.index, zip(points.x, points.y, strict=True), strict=True))

    def gap(a, b):
        return ((where[a][0] - where[b][0]) ** 2 + (where[a][1] - where[b][1]) ** 2) ** 0.5

    within = max(gap(0, 1), gap(1, 2), gap(0, 2), gap(4, 5))
    across = min(gap(a, b) for a in (0, 1, 2) for b in (4, 5))
    assert across > within
