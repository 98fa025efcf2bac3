"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL (teams).

engine = connect("sqlite:///data/monoscope.db")     # or postgresql://user@host/db
migrate(engine)                                      # alembic upgrade head
with session_scope(engine) as session: ...           # one transaction: all or nothing
"""

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import MonoscopeError

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the harvest writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Pages read scattered example rows of a multi-GB file: map it instead of copying each page
    # through SQLite's small default cache.
    cursor.execute("PRAGMA mmap_size=1073741824")
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.close()


def _has_nul(parameters) -> bool:
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return any(isinstance(v, str) and "\x00" in v for v in values)


def _without_nul(parameters):
    def clean(v):
        return v.replace("\x00", "\ufffd") if isinstance(v, str) else v

    if isinstance(parameters, dict):
        return {k: clean(v) for k, v in parameters.items()}
    return type(parameters)(clean(v) for v in parameters)


def _bind_text_without_nul(_conn, _cursor, statement, parameters, _context, executemany):
    """PostgreSQL text cannot hold NUL, and hostile input (a path, a query, a label) may carry
    one: such strings are bound with U+FFFD in its place, so they are stored and looked up as
    text instead of failing the statement."""
    rows = parameters if executemany else [parameters]
    if not any(_has_nul(row) for row in rows if row):
        return statement, parameters
    cleaned = [_without_nul(row) if row else row for row in rows]
    return statement, cleaned if executemany else cleaned[0]


def storage_refusal(exc: BaseException) -> str | None:
    """What to tell a person when `exc` is the database refusing to store anything (read-only,
    out of space): a state to wait out, not a bug. None for any other error."""
    if not isinstance(exc, DBAPIError):
        return None
    reason, state = str(exc.orig).lower(), getattr(exc.orig, "sqlstate", None)
    if state == "25006" or "readonly database" in reason or "read-only" in reason:
        return "The database is read-only at the moment, so nothing was saved; reading works."
    if state == "53100" or any(
        words in reason for words in ("disk is full", "no space left", "could not extend file")
    ):
        return "The database is out of disk space, so nothing was saved; try again later."
    return None


def connect(url: str) -> Engine:
    """An engine for a database URL; plain postgresql:// URLs use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise MonoscopeError(f"bad database URL {url!r}: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise MonoscopeError(f"database {url!r}: Monoscope supports SQLite and PostgreSQL")
    engine = create_engine(parsed, pool_pre_ping=True)
    event.listen(engine, "before_cursor_execute", _bind_text_without_nul, retval=True)
    return engine


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


# Any fixed number: the PostgreSQL advisory lock that migrating processes queue on.
MIGRATION_LOCK = 0x6D6F6E6F


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to a revision; idempotent. Every server process migrates as it starts, so
    processes starting together take turns: each waits for the database's write lock before it
    reads the schema's version, and finds the work done by the one before it."""
    try:
        if revision == "head" and _at_head(engine):
            return  # nothing to do, and no write lock: a read-only database still serves
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's write lock, now
            config = alembic_config(engine)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        raise MonoscopeError(f"cannot open database {engine.url!r}: {exc.orig}") from exc


def _at_head(engine: Engine) -> bool:
    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads()) == heads


@contextmanager
def job_lock(engine: Engine, name: str) -> Iterator[None]:
    """Jobs of one `name` (e.g. "explain:model/sae", one SAE's labelling) take turns across
    processes and machines: a PostgreSQL advisory lock held on its own connection, or a lock
    file beside a SQLite database. Without it two runs both found the same features unlabelled
    and labelled (and paid for) them twice."""
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        return
    database = engine.url.database
    if not database or database == ":memory:" or engine.url.query.get("uri"):
        yield  # in memory (one process owns it) or a file: URI, whose path is not parsed here
        return
    safe = "".join(c if c.isalnum() else "-" for c in name)
    with open(Path(database).parent / f".{Path(database).name}.{safe}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back entirely on any error."""
    with sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        yield session
