"""Accounts, API keys, sessions, CSRF and write limits, on both databases."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.core.errors import MonoscopeError
from app.db import accounts
from app.db.engine import session_scope
from app.db.models import ApiKey, SteeringSession
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import run_cli
from tests.web_world import PASSWORD, form_token, header_token, sign_in

SHARE = {"features": [], "settings": {"mode": "chat"}, "steered": [], "default": []}


@pytest.fixture
def people(engine):
    with session_scope(engine) as session:
        ada = accounts.add_user(session, "ada", PASSWORD)
        _, secret = accounts.create_key(session, ada, "laptop")
    return secret


def _app(engine, **settings):
    url = engine.url.render_as_string(hide_password=False)
    return create_app(Settings(database_url=url, **settings))


def test_passwords_and_keys_are_stored_as_hashes(engine, people):
    with session_scope(engine) as session:
        stored = session.execute(text("SELECT password_hash FROM users")).scalar_one()
        key = session.scalars(select(ApiKey)).one()
        assert PASSWORD not in stored and stored.startswith("scrypt$")
        assert people not in key.key_hash and people.startswith(key.prefix)
        assert accounts.sign_in(session, "ada", PASSWORD).name == "ada"
        assert accounts.sign_in(session, "ada", "wrong password") is None
        assert accounts.sign_in(session, "nobody", PASSWORD) is None
        assert accounts.user_for_key(session, people)[0].name == "ada"
        with pytest.raises(MonoscopeError, match="already exists"):
            accounts.add_user(session, "ada", PASSWORD)
        with pytest.raises(MonoscopeError, match="at least 8"):
            accounts.add_user(session, "bob", "short")
        accounts.revoke_key(session, key.prefix)
        assert accounts.user_for_key(session, people) is None
        with pytest.raises(MonoscopeError, match="no active key"):
            accounts.revoke_key(session, key.prefix)


def test_writes_need_a_key_or_a_signed_in_session_with_its_csrf_token(engine, people):
    with TestClient(_app(engine)) as client:
        anonymous = client.post("/steer/share", json=SHARE)
        assert anonymous.status_code == 401 and "Sign in" in anonymous.json()["detail"]
        bad = client.post("/steer/share", json=SHARE, headers={"Authorization": "Bearer msk_x"})
        assert bad.status_code == 401 and "unknown or has been revoked" in bad.json()["detail"]
        keyed = client.post(
            "/steer/share", json=SHARE, headers={"Authorization": f"Bearer {people}"}
        )
        assert keyed.status_code == 200
        assert client.get("/").text.count("Sign in") >= 1

        assert sign_in(client, "wrong password").status_code == 400
        signed = sign_in(client, next="/steer")
        assert signed.status_code == 303 and signed.headers["location"] == "/steer"
        page = client.get("/steer").text
        assert "ada" in page and "Sign out" in page
        forged = client.post("/steer/share", json=SHARE)  # the cookie alone is not enough
        assert forged.status_code == 403 and "did not come from this site" in forged.text
        token = header_token(page)
        ok = client.post("/steer/share", json=SHARE, headers={"X-CSRF-Token": token})
        assert ok.status_code == 200
        out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
        assert out.status_code == 303
        assert (
            client.post("/steer/share", json=SHARE, headers={"X-CSRF-Token": token}).status_code
            == 401
        )
    with session_scope(engine) as session:
        authors = session.scalars(select(SteeringSession.author)).all()
        assert authors == ["ada", "ada"]


def test_sign_in_rejects_forged_forms_and_foreign_redirects(engine, people):
    with TestClient(_app(engine)) as client:
        client.get("/login")
        forged = client.post(
            "/login", data={"name": "ada", "password": PASSWORD, "csrf_token": "guess"}
        )
        assert forged.status_code == 403
        away = sign_in(client, next="//evil.example/")
        assert away.status_code == 303 and away.headers["location"] == "/"


def test_a_server_can_require_sign_in_to_read(engine, people):
    with TestClient(_app(engine, require_sign_in=True)) as client:
        page = client.get("/search?q=x", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/search%3Fq%3Dx"
        assert client.get("/api/v1/saes").status_code == 401
        assert client.get("/healthz").status_code == 200  # probes stay open
        assert client.get("/login").status_code == 200
        keyed = client.get("/api/v1/saes", headers={"Authorization": f"Bearer {people}"})
        assert keyed.status_code == 200
        sign_in(client)
        assert client.get("/search?q=x").status_code == 200


def test_writes_and_sign_ins_are_rate_limited(engine, people):
    with TestClient(_app(engine, write_rate_per_minute=2, sign_in_rate_per_minute=2)) as client:
        headers = {"Authorization": f"Bearer {people}"}
        codes = [
            client.post("/steer/share", json=SHARE, headers=headers).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        token = form_token(client.get("/login").text)
        attempts = [
            client.post(
                "/login", data={"name": "ada", "password": "nope", "csrf_token": token}
            ).status_code
            for _ in range(3)
        ]
        assert attempts == [400, 400, 429]


def test_the_cli_adds_users_and_makes_and_revokes_keys(engine):
    env = {"MONOSCOPE_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    added = run_cli("user", "add", "grace", "--password-stdin", env=env, input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    again = run_cli("user", "add", "grace", "--password-stdin", env=env, input=PASSWORD + "\n")
    assert again.returncode == 2 and "error: user 'grace' already exists" in again.stderr
    made = run_cli("key", "create", "--user", "grace", "--name", "ci", env=env)
    secret = made.stdout.strip().splitlines()[-1]
    assert made.returncode == 0 and secret.startswith("msk_")
    listed = run_cli("key", "list", env=env)
    assert "grace" in listed.stdout and secret[:12] in listed.stdout and secret not in listed.stdout
    nobody = run_cli("key", "create", "--user", "nobody", env=env)
    assert nobody.returncode == 2 and "no user 'nobody'" in nobody.stderr
    with TestClient(_app(engine)) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        assert client.post("/steer/share", json=SHARE, headers=headers).status_code == 200
        assert run_cli("key", "revoke", secret[:12], env=env).returncode == 0
        assert client.post("/steer/share", json=SHARE, headers=headers).status_code == 401


def _share_with(client, cookie: str, token: str):
    """A write from another browser holding a copy of a session cookie."""
    headers = {"X-CSRF-Token": token, "Cookie": f"monoscope={cookie}"}
    return client.post("/steer/share", json=SHARE, headers=headers)


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(engine, people):
    app = _app(engine)
    with TestClient(app) as client, TestClient(app) as thief:
        sign_in(client)
        token = header_token(client.get("/steer").text)
        copied = client.cookies["monoscope"]
        assert _share_with(thief, copied, token).status_code == 200  # the copy works while valid
        client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
        refused = _share_with(thief, copied, token)
        assert refused.status_code == 401
        page = thief.get("/", headers={"Cookie": f"monoscope={copied}"}).text
        assert "Sign out" not in page  # the closed sign-in no longer shows either


def test_a_password_change_signs_every_browser_out(engine, people):
    app = _app(engine)
    with TestClient(app) as client:
        sign_in(client)
        token = header_token(client.get("/steer").text)
        assert (
            client.post("/steer/share", json=SHARE, headers={"X-CSRF-Token": token}).status_code
            == 200
        )
        with session_scope(engine) as session:
            accounts.set_password(session, "ada", "a new long password")
        assert (
            client.post("/steer/share", json=SHARE, headers={"X-CSRF-Token": token}).status_code
            == 401
        )
        assert sign_in(client).status_code == 400  # the old password is gone
        assert sign_in(client, "a new long password").status_code == 303


def test_a_sign_in_costs_the_same_whether_or_not_the_name_exists(engine, people, monkeypatch):
    """Timing would tell which names exist; count the expensive step instead of the clock."""
    import hashlib

    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(
        accounts.hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    with session_scope(engine) as session:
        accounts.sign_in(session, "nobody", PASSWORD)  # warms the stand-in hash once
        work = {}
        for name in ("ada", "nobody", "ada", "someone else"):
            calls.clear()
            accounts.sign_in(session, name, "not the password")
            work[name] = len(calls)
    assert set(work.values()) == {1}, work


def test_key_list_shows_names_that_look_like_markup(engine, people):
    with session_scope(engine) as session:
        accounts.create_key(session, accounts.find_user(session, "ada"), "[bold]x[/i] [link")
    env = {"MONOSCOPE_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    listed = run_cli("key", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "[bold]x[/i] [link" in listed.stdout and "Traceback" not in listed.stderr


def test_a_sign_in_link_works_once_and_not_after_it_expires(engine):
    from datetime import timedelta

    with session_scope(engine) as session:
        admin = accounts.ensure_user(session, "admin")
        assert accounts.ensure_user(session, "admin").id == admin.id
        token = accounts.create_sign_in_link(session, admin, timedelta(days=1))
        stale = accounts.create_sign_in_link(session, admin, timedelta(seconds=-1))
    with TestClient(_app(engine)) as client:
        signed = client.get(f"/login/link?token={token}", follow_redirects=False)
        assert signed.status_code == 303
        assert "Sign out" in client.get("/").text and "admin" in client.get("/").text
        again = client.get(f"/login/link?token={token}")
        assert again.status_code == 400 and "used already or has expired" in again.text
        assert client.get(f"/login/link?token={stale}").status_code == 400
        assert client.get("/login/link?token=guess").status_code == 400


def test_the_cli_changes_a_password(engine, people):
    env = {"MONOSCOPE_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    changed = run_cli(
        "user", "password", "ada", "--password-stdin", env=env, input="a brand new password\n"
    )
    assert changed.returncode == 0, changed.stderr
    with session_scope(engine) as session:
        assert accounts.sign_in(session, "ada", "a brand new password") is not None
    nobody = run_cli("user", "password", "nobody", "--password-stdin", env=env, input="x" * 9)
    assert nobody.returncode == 2 and "no user 'nobody'" in nobody.stderr
