"""A database that refuses writes (read-only, out of space): a clear 503 or one CLI error line,
never a 500 or a traceback; reading goes on."""

import sqlite3
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError

from app.db import accounts
from app.db.engine import session_scope, storage_refusal
from app.settings import Settings
from app.web.app import create_app
from tests.integration.test_cli import run_cli
from tests.web_world import PASSWORD, build_world


@contextmanager
def read_only(engine):
    """A URL of the same database on which every write is refused."""
    if engine.dialect.name == "sqlite":
        yield f"sqlite:///file:{engine.url.database}?mode=ro&uri=true"
        return
    name = engine.url.database
    with engine.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        connection.commit()
    try:
        yield engine.url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text("SET SESSION default_transaction_read_only = off"))
            connection.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
            connection.commit()


def test_writes_to_a_read_only_database_answer_503_and_reads_go_on(engine):
    with session_scope(engine) as session:
        build_world(session)
        _, secret = accounts.create_key(session, accounts.add_user(session, "ada", PASSWORD), "t")
    key = {"Authorization": f"Bearer {secret}"}
    with read_only(engine) as url, TestClient(create_app(Settings(database_url=url))) as client:
        assert client.get("/tiny/res1/0").status_code == 200
        made = client.post("/api/v1/lists", json={"title": "bridges"}, headers=key)
        assert made.status_code == 503 and made.headers["Retry-After"]
        assert "read-only" in made.json()["detail"]
        share = client.post("/steer/share", json={"features": []}, headers=key)
        assert share.status_code == 503
        added = run_cli(
            "user",
            "add",
            "bob",
            "--password-stdin",
            env={"MONOSCOPE_DATABASE_URL": url},
            input=PASSWORD + "\n",
        )
        assert added.returncode == 2 and "Traceback" not in added.stderr
        assert added.stderr.strip().splitlines() == [
            "error: The database is read-only at the moment, so nothing was saved; reading works."
        ]


def test_a_full_database_is_named_as_such(tmp_path):
    """SQLite's own 'database or disk is full', from a file capped at a few pages."""
    engine = create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    event.listen(engine, "connect", lambda c, _: c.execute("PRAGMA max_page_count = 8"))
    with pytest.raises(OperationalError) as raised, engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (b BLOB)"))
        for _ in range(100):
            connection.execute(text("INSERT INTO t VALUES (:b)"), {"b": b"x" * 4096})
    assert isinstance(raised.value.orig, sqlite3.OperationalError)
    assert "out of disk space" in storage_refusal(raised.value)
    assert storage_refusal(OperationalError("SELECT 1", {}, Exception("no such table"))) is None
