"""Label review on both databases: human labels, edits, verdicts, retirement, history, and which
label a feature is shown by."""

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError
from app.db import review
from app.db.engine import session_scope
from app.db.labels import refresh_summary
from app.db.models import Explanation, Feature, SaeRow
from app.db.search import search_explanations
from tests.web_world import HOSTILE_LABEL, SCRIPT, form_token, sign_in, writer_client


@pytest.fixture
def client(engine):
    with writer_client(engine) as client:
        yield client


def _shown(client, index: int = 0) -> str | None:
    return client.get(f"/api/v1/features/tiny/res1/{index}").json()["label"]


def _labels(client, index: int = 0) -> list[dict]:
    return client.get(f"/api/v1/features/tiny/res1/{index}").json()["labels"]


def test_verified_leads_wrong_and_retired_never_show_and_history_keeps_all(engine, client):
    scored = _shown(client)
    assert scored is not None
    added = client.post(
        "/api/v1/features/tiny/res1/0/labels",
        headers=client.key,
        json={"text": "  the word   Gate  "},
    )
    assert added.status_code == 201 and added.json()["text"] == "the word Gate"
    human = added.json()["id"]
    assert _shown(client) == scored  # unscored and unreviewed: the scored label still leads

    def act(action, **extra):
        response = client.patch(
            f"/api/v1/labels/{human}", headers=client.key, json={"action": action, **extra}
        )
        assert response.status_code == 200, response.text
        return response.json()

    assert act("verified")["verdict"] == "verified"
    assert _shown(client) == "the word Gate"
    assert act("edit", text="the token Gate")["text"] == "the token Gate"
    assert _shown(client) == "the token Gate"
    act("wrong")
    assert _shown(client) == scored
    act("unreviewed")
    best = next(label for label in _labels(client) if label["text"] == scored)
    client.patch(f"/api/v1/labels/{best['id']}", headers=client.key, json={"action": "retire"})
    assert _shown(client) != scored  # the next best label takes its place
    with session_scope(engine) as session:  # a retired label leaves search too
        assert best["id"] not in {h.explanation_id for h in search_explanations(session, scored)}
    client.patch(f"/api/v1/labels/{best['id']}", headers=client.key, json={"action": "restore"})
    assert _shown(client) == scored

    events = client.get("/api/v1/features/tiny/res1/0/history").json()
    assert [e["action"] for e in events] == [
        "restored",
        "retired",
        "unreviewed",
        "wrong",
        "edited",
        "verified",
        "added",
    ]
    assert all(e["author"] == "ada" for e in events)
    assert events[4]["before"] == "the word Gate" and events[4]["after"] == "the token Gate"


def _kept_and_recomputed_summary(engine) -> tuple[dict, dict]:
    with Session(engine) as session:
        sae = session.scalars(select(SaeRow)).one()
        kept = dict(sae.summary)
        recomputed = refresh_summary(session, sae.id)
        session.rollback()
    return kept, recomputed


def test_reviews_shift_the_sae_summary_exactly_as_a_full_recount(engine, client):
    def labels_of(index):
        return {label["text"]: label["id"] for label in _labels(client, index)}

    steps = [
        ("PATCH", labels_of(1)["Golden Gate Bridge in the fog"], {"action": "wrong"}),
        ("POST", 4, {"text": "rare tokens"}),  # unlabelled before: labelled, never scored
        ("PATCH", labels_of(2)["common words"], {"action": "retire"}),
        ("PATCH", labels_of(0)["an older, weaker label"], {"action": "verified"}),
        ("PATCH", labels_of(2)["common words"], {"action": "restore"}),
        ("PATCH", labels_of(1)["Golden Gate Bridge in the fog"], {"action": "unreviewed"}),
        ("PATCH", labels_of(0)["an older, weaker label"], {"action": "edit", "text": "G"}),
        # Feature 0 also has a failed attempt: with no label left to show, it counts as failed.
        ("PATCH", labels_of(0)[HOSTILE_LABEL], {"action": "retire"}),
        ("PATCH", labels_of(0)["an older, weaker label"], {"action": "wrong"}),
        ("PATCH", labels_of(0)[HOSTILE_LABEL], {"action": "restore"}),
    ]
    seen_scored, seen_failed = set(), set()
    for method, target, body in steps:
        if method == "POST":
            path = f"/api/v1/features/tiny/res1/{target}/labels"
            answer = client.post(path, headers=client.key, json=body)
        else:
            answer = client.patch(f"/api/v1/labels/{target}", headers=client.key, json=body)
        assert answer.status_code in (200, 201), answer.text
        kept, recomputed = _kept_and_recomputed_summary(engine)
        seen_scored.add(kept["scored"])
        seen_failed.add(kept["failed"])
        assert kept.pop("mean_score") == pytest.approx(recomputed.pop("mean_score"), abs=1e-4)
        assert kept.pop("score_sum") == pytest.approx(recomputed.pop("score_sum"))
        kept.pop("updated_at"), recomputed.pop("updated_at")
        assert kept == recomputed, body
    assert len(seen_scored) > 1 and seen_failed == {0, 1}  # the steps moved every count


def test_an_edit_drops_the_scores_of_the_old_text(engine, client):
    best = next(label for label in _labels(client) if label["text"] == _shown(client))
    assert best["scores"]
    edited = client.patch(
        f"/api/v1/labels/{best['id']}",
        headers=client.key,
        json={"action": "edit", "text": "something else"},
    ).json()
    assert edited["scores"] == {}
    with session_scope(engine) as session:
        label = session.get(Explanation, best["id"])
        with pytest.raises(MonoscopeError, match="unknown review action"):
            review.review_label(session, label, "delete", "ada")
        with pytest.raises(MonoscopeError, match="1 to 500"):
            review.review_label(session, label, "edit", "ada", "   ")


@pytest.mark.parametrize(
    "method, path, json, status",
    [
        ("post", "/api/v1/features/tiny/res1/0/labels", {"text": ""}, 422),
        ("post", "/api/v1/features/tiny/res1/99/labels", {"text": "x"}, 404),
        ("patch", "/api/v1/labels/999999", {"action": "wrong"}, 404),
        ("patch", "/api/v1/labels/1", {"action": "explode"}, 400),
    ],
)
def test_bad_review_requests_get_clear_errors(client, method, path, json, status):
    response = getattr(client, method)(path, headers=client.key, json=json)
    assert response.status_code == status and response.json()["detail"]
    assert getattr(client, method)(path, json=json).status_code in (401, 422)


def test_the_feature_page_reviews_labels_with_forms(engine, client):
    page = client.get("/tiny/res1/0")
    assert "Add label" not in page.text and 'class="label-review"' not in page.text
    sign_in(client)
    page = client.get("/tiny/res1/0")
    assert "Add label" in page.text and 'class="label-review"' in page.text
    token = form_token(page.text)
    added = client.post(
        "/labels/add",
        data={"csrf_token": token, "feature": "tiny/res1/0", "text": SCRIPT},
        follow_redirects=False,
    )
    assert added.status_code == 303 and added.headers["location"] == "/tiny/res1/0#labels"
    with session_scope(engine) as session:
        human = session.query(Explanation).filter_by(method="human").one()
    client.post(f"/labels/{human.id}", data={"csrf_token": token, "action": "verified"})
    page = client.get("/tiny/res1/0")
    assert SCRIPT not in page.text and "&lt;script&gt;" in page.text.split("<h1>")[1][:300]
    history = client.get("/labels/history/tiny/res1/0").text
    assert "marked" in history and "verified" in history and SCRIPT not in history
    assert client.post(f"/labels/{human.id}", data={"action": "wrong"}).status_code == 403
    with session_scope(engine) as session:
        assert session.query(Feature).filter_by(index=0).one().label == SCRIPT
