"""Hostile input on both databases: oversized bodies, invalid UTF-8, SQL-looking search strings
and path traversal. Each gets a 4xx or a plain answer, never a 5xx, and leaves the data as it was.
"""

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Explanation, Feature, FeatureList
from app.settings import Settings
from tests.web_world import writer_client

LIMIT = Settings().max_body_bytes
SQL_LOOKING = [
    "'; DROP TABLE features; --",
    "%' OR 1=1 --",
    '" OR ""="',
    "golden' UNION SELECT password_hash FROM users --",
    "NEAR(golden gate",  # FTS5 syntax
    'gate"*',
    "AND OR NOT",
    "label:golden",
    "golden & !gate | (fog <-> bridge):*",  # PostgreSQL tsquery operators
    "\\x00; SELECT pg_sleep(5)",
    "%%%%____",
]


@pytest.fixture
def client(engine):
    with writer_client(engine) as client:
        yield client


def _counts(engine) -> tuple[int, int, int]:
    with Session(engine) as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table))
            for table in (Feature, Explanation, FeatureList)
        )


def test_oversized_bodies_are_refused_before_they_are_read(client, engine):
    before = _counts(engine)
    huge = {"title": "x" * (LIMIT + 1)}
    answer = client.post("/api/v1/lists", headers=client.key, json=huge)
    assert answer.status_code == 413 and f"{LIMIT:,} bytes" in answer.json()["detail"]

    page = client.post("/lists", headers=client.key, data={"title": "y" * (LIMIT + 1)})
    assert page.status_code == 413 and "text/html" in page.headers["content-type"]
    assert f"{LIMIT:,} bytes" in page.text

    def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(LIMIT // 65_536 + 2):
            yield b"a" * 65_536

    chunked = client.post(
        "/api/v1/activations",
        headers=client.key | {"Content-Type": "application/json"},
        content=chunks(),
    )
    assert chunked.status_code == 413

    assert _counts(engine) == before
    small = client.post("/api/v1/lists", headers=client.key, json={"title": "fits"})
    assert small.status_code == 201  # the server goes on serving


def test_invalid_utf8_gets_a_4xx_or_a_plain_answer(client, engine):
    bad = b'{"title": "\xff\xfe broken"}'
    answer = client.post(
        "/api/v1/lists", headers=client.key | {"Content-Type": "application/json"}, content=bad
    )
    assert answer.status_code == 400 and answer.json()["detail"]

    form = client.post(
        "/lists",
        headers=client.key | {"Content-Type": "application/x-www-form-urlencoded"},
        content=b"title=%FF%FEx",
        follow_redirects=False,
    )
    assert form.status_code < 500
    with Session(engine) as session:  # whatever was kept is text, and shows as text
        titles = session.scalars(select(FeatureList.title)).all()
    assert all(isinstance(t, str) for t in titles)
    assert client.get("/lists").status_code == 200

    for path in ("/search?q=%FF%FE", "/api/v1/search?q=%C3%28", "/search/text?text=%E2%82"):
        assert client.get(path).status_code < 500, path
    assert client.get("/%FF%FE/res1").status_code == 404
    assert client.get("/tiny/%C3%28/0").status_code == 404
    assert (
        client.post(
            "/api/v1/lists", headers={"Authorization": b"Bearer \xff\xfe"}, json={"title": "t"}
        ).status_code
        == 401
    )
    assert client.get("/", headers={"Cookie": b"monoscope=\xff\xfe.garbage"}).status_code == 200


def test_nul_characters_are_looked_up_and_stored_as_text(client):
    # PostgreSQL refuses NUL in text; it must cost a 404 or a replacement character, not a 500.
    for path in (
        "/%00/res1",
        "/tiny/res1%00/0",
        "/lists/%00",
        "/api/v1/lists/a%00",
        "/search?q=gate%00",
        "/tiny/res1?q=%00",
        "/api/v1/search?q=%00",
    ):
        assert client.get(path).status_code in (200, 404), path
    made = client.post("/api/v1/lists", headers=client.key, json={"title": "a\u0000b"})
    assert made.status_code == 201 and made.json()["title"] in ("a\x00b", "a\ufffdb")
    label = client.post(
        "/api/v1/features/tiny/res1/1/labels", headers=client.key, json={"text": "fog\u0000"}
    )
    assert label.status_code == 201
    shared = client.post(
        "/steer/share",
        headers=client.key,
        json={"default": [{"role": "user", "content": "a\u0000"}]},
    )
    assert shared.status_code == 200
    assert client.get(shared.json()["url"].removeprefix("http://testserver")).status_code == 200


@pytest.mark.parametrize("q", SQL_LOOKING)
def test_sql_looking_search_strings_are_only_text(client, engine, q):
    before = _counts(engine)
    page = client.get("/search", params={"q": q})
    assert page.status_code == 200
    hits = client.get("/api/v1/search", params={"q": q})
    assert hits.status_code == 200
    assert all(h["model"] == "tiny" for h in hits.json())  # only real labels come back
    assert client.get("/tiny/res1", params={"q": q}).status_code < 500
    assert client.get("/api/v1/saes/tiny/res1/features", params={"sort": q}).status_code == 422
    assert _counts(engine) == before
    found = client.get("/api/v1/search", params={"q": "Golden Gate fog"}).json()
    assert [h["index"] for h in found][:1] == [1]  # the tables and the index still work


def test_sql_looking_text_is_stored_and_shown_as_written(client):
    title = "x'); DELETE FROM feature_lists; --"
    made = client.post("/api/v1/lists", headers=client.key, json={"title": title})
    assert made.status_code == 201
    listed = client.get("/api/v1/lists").json()
    assert [entry["title"] for entry in listed] == [title]
    assert "x&#39;); DELETE FROM feature_lists; --" in client.get("/lists").text


@pytest.mark.parametrize(
    "path",
    [
        "/static/../pyproject.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/css/..%2f..%2f..%2fpyproject.toml",
        "/vendor/htmx/..%2f..%2f..%2f..%2fpackage.json",
        "/static//etc/passwd",
    ],
)
def test_static_files_never_leave_their_folders(client, path):
    answer = client.get(path)
    assert answer.status_code == 404
    assert "[project]" not in answer.text and "root:" not in answer.text


@pytest.mark.parametrize(
    "path, status",
    [
        ("/tiny/res1/99999999999999999999", 404),
        ("/tiny/res1/²", 404),  # a digit to str.isdigit, not to int()
        ("/api/v1/features/tiny/res1/99999999999999999999", 422),
        ("/api/v1/features/tiny/res1/-1", 422),
        ("/lists/for/tiny/res1/4294967296", 422),
        ("/labels/history/tiny/res1/2147483648", 422),
        ("/tiny/res1?after=99999999999999999999", 400),  # keyset cursors, index order
        ("/tiny/res1?sort=density&after=0.5:9223372036854775808", 400),
        ("/tiny/res1?sort=density&after=1e999:3", 400),
        ("/api/v1/saes/tiny/res1/features?after=99999999999999999999", 400),
        ("/steer?f=tiny/res1/4294967296:clamp:5", 400),  # preset past 32 bits
    ],
)
def test_numbers_past_the_columns_are_refused_not_overflowed(client, path, status):
    assert client.get(path).status_code == status
    past_ids = "/api/v1/lists/x/items/9223372036854775808"  # ids are 64-bit
    assert client.delete(past_ids, headers=client.key).status_code == 422
    assert client.delete(past_ids.replace("808", "807"), headers=client.key).status_code == 404


def test_links_never_follow_a_forged_host_header(engine):
    from fastapi.testclient import TestClient

    from app.web.app import create_app

    with writer_client(engine) as client:
        evil = {"Host": "evil.example"}
        shared = client.post("/steer/share", json={"features": []}, headers=client.key | evil)
        assert shared.json()["url"].startswith("http://testserver/steer/")  # the socket's name
        page = client.get("/tiny/res1/0", headers=evil).text
        assert "evil.example" not in page
        listed = client.get("/api/v1/saes", headers=evil).text
        assert "evil.example" not in listed and "http://testserver/tiny/res1" in listed
    url = engine.url.render_as_string(hide_password=False)
    public = Settings(database_url=url, base_url="https://monoscope.example.org")
    with TestClient(create_app(public)) as client:
        page = client.get("/tiny/res1/0", headers={"Host": "evil.example"})
        assert "https://monoscope.example.org/tiny/res1" in page.text and "evil" not in page.text
    with pytest.raises(ValueError, match="scheme and host"):
        Settings(base_url="monoscope.example.org/x")
