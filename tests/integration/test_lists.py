"""Feature lists on both databases: pages, forms, exports, the API, and who may change them."""

import csv
import io

import pytest

from tests.helpers import parsed
from tests.web_world import HOSTILE_LABEL, SCRIPT, header_token, sign_in, writer_client


def _listed(page: str) -> list[str]:
    """The feature indices a list page links to, in order."""
    links = [a["href"].removeprefix("/tiny/res1/") for a in parsed(page).select("a[href]")]
    return [rest for rest in links if rest.isdigit()]


@pytest.fixture
def client(engine):
    with writer_client(engine) as client:
        yield client


def _signed_in(client) -> str:
    sign_in(client)
    return header_token(client.get("/lists").text)


def test_the_api_makes_orders_annotates_and_exports_a_list(client):
    assert client.post("/api/v1/lists", json={"title": "x"}).status_code == 401
    body = {"title": "Colour features", "description": "for the paper"}
    made = client.post("/api/v1/lists", headers=client.key, json=body)
    assert made.status_code == 201 and made.json()["author"] == "ada"
    slug = made.json()["slug"]
    for index, note in [(0, "first"), (1, '=HYPERLINK("http://x")'), (2, SCRIPT)]:
        item = {"model": "tiny", "sae": "res1", "index": index, "note": note}
        added = client.post(f"/api/v1/lists/{slug}/items", headers=client.key, json=item)
        assert added.status_code == 200
    items = client.get(f"/api/v1/lists/{slug}").json()["items"]
    assert [(i["index"], i["position"]) for i in items] == [(0, 0), (1, 1), (2, 2)]
    last = items[2]["id"]
    moved = client.patch(
        f"/api/v1/lists/{slug}/items/{last}",
        headers=client.key,
        json={"position": 0, "note": "now first"},
    ).json()
    assert [i["index"] for i in moved["items"]] == [2, 0, 1]
    assert moved["items"][0]["note"] == "now first"
    again = client.post(
        f"/api/v1/lists/{slug}/items",
        headers=client.key,
        json={"model": "tiny", "sae": "res1", "index": 0},
    )
    assert len(again.json()["items"]) == 3  # already on it: no duplicate
    removed = client.delete(
        f"/api/v1/lists/{slug}/items/{moved['items'][1]['id']}", headers=client.key
    ).json()
    assert [(i["index"], i["position"]) for i in removed["items"]] == [(2, 0), (1, 1)]
    assert client.get("/api/v1/lists").json()[0]["items"] == 2

    exported = client.get(f"/lists/{slug}/export.json")
    assert "attachment" in exported.headers["content-disposition"]
    assert exported.json()["items"][1]["note"] == '=HYPERLINK("http://x")'
    rows = list(csv.DictReader(io.StringIO(client.get(f"/lists/{slug}/export.csv").text)))
    assert [r["index"] for r in rows] == ["2", "1"]
    assert rows[1]["note"].startswith("'=")  # a spreadsheet shows it, never runs it
    assert rows[0]["path"] == "/tiny/res1/2"


@pytest.mark.parametrize(
    "method, path, json, status",
    [
        ("post", "/api/v1/lists", {"title": ""}, 422),
        ("post", "/api/v1/lists", {"title": "   "}, 400),
        ("post", "/api/v1/lists/nope/items", {"model": "tiny", "sae": "res1", "index": 0}, 404),
        ("get", "/api/v1/lists/nope", None, 404),
    ],
)
def test_bad_list_requests_get_clear_errors(client, method, path, json, status):
    response = getattr(client, method)(path, headers=client.key, **({"json": json} if json else {}))
    assert response.status_code == status and response.json()["detail"]


def test_pages_add_from_a_feature_reorder_and_escape(client):
    box = client.get("/lists/for/tiny/res1/0", params={"next": "/tiny/res1/0"})
    assert "Sign in" in box.text and "Add to list" not in box.text
    token = _signed_in(client)
    box = client.get("/lists/for/tiny/res1/0", params={"next": "/tiny/res1/0"})
    assert "Add to list" in box.text and "a new list" in box.text
    form = {
        "csrf_token": token,
        "feature": "tiny/res1/0",
        "new_title": HOSTILE_LABEL,
        "note": SCRIPT,
        "next": "/tiny/res1/0",
    }
    added = client.post("/lists/add", data=form, follow_redirects=False)
    assert added.status_code == 303 and added.headers["location"] == "/tiny/res1/0"
    box = client.get("/lists/for/tiny/res1/0").text
    slug = parsed(box).select_one('a[href*="/lists/"]')["href"].rsplit("/", 1)[1]
    for index in (1, 2):
        client.post(
            "/lists/add", data={"csrf_token": token, "feature": f"tiny/res1/{index}", "list": slug}
        )
    page = client.get(f"/lists/{slug}")
    assert page.status_code == 200 and SCRIPT not in page.text and HOSTILE_LABEL not in page.text
    assert _listed(page.text) == ["0", "1", "2"]
    item = [
        f["action"].rsplit("/", 1)[1] for f in parsed(page.text).select('form[action*="/items/"]')
    ][2]
    client.post(f"/lists/{slug}/items/{item}", data={"csrf_token": token, "action": "up"})
    page = client.get(f"/lists/{slug}")
    assert _listed(page.text) == ["0", "2", "1"]
    forged = client.post(f"/lists/{slug}/items/{item}", data={"action": "remove"})
    assert forged.status_code == 403
    assert (
        client.post(
            f"/lists/{slug}/items/999999", data={"csrf_token": token, "action": "up"}
        ).status_code
        == 404
    )
    bad = client.post(
        "/lists/add", data={"csrf_token": token, "feature": "tiny/res1/x", "list": slug}
    )
    assert bad.status_code == 400 and "model/sae/index" in bad.text
    index_page = client.get("/lists")
    assert "3</td>" in index_page.text and "New list" in index_page.text
