import os

# This world has no model hub: fail fast instead of retrying network requests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from sqlalchemy import Engine, text

from app.core.model import LoadedModel, load_model
from app.db.engine import connect, migrate
from app.db.models import Base
from tests.helpers import build_model, random_sae

POSTGRES_URL = os.environ.get(
    "MONOSCOPE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _reachable(url: str) -> bool:
    try:
        with connect(url).connect():
            return True
    except Exception:
        return False


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> str:
    """Every database test runs on both engines. CI must have PostgreSQL; elsewhere it may not."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'monoscope.db'}"
    if not _reachable(POSTGRES_URL):
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}")
    with connect(POSTGRES_URL).begin() as connection:  # a clean slate for this test session
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    return POSTGRES_URL


def empty_database(database_url: str) -> Engine:
    """An engine on the database at the latest schema with every table empty."""
    engine = connect(database_url)
    migrate(engine)
    tables = list(reversed(Base.metadata.sorted_tables))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(table.delete())
    return engine


@pytest.fixture
def engine(database_url) -> Engine:
    """A database at the latest schema with every table empty."""
    engine = empty_database(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture(scope="session")
def gpt2(gpt2_dir) -> LoadedModel:
    return load_model(gpt2_dir, device="cpu")


@pytest.fixture(scope="session")
def gpt2_sae(gpt2):
    """A standard SAE attached at blocks.1.hook_resid_post of the tiny GPT-2."""
    return gpt2.attach(random_sae(hook_name="blocks.1.hook_resid_post"))


@pytest.fixture(scope="session")
def demo_workspace():
    """The shipped demo model with its SAEs "res1" and "res3", as `monoscope demo` serves them."""
    from app.core.workspace import Workspace
    from app.demo import DEMO_MODEL, DEMO_SAES

    return Workspace.load(str(DEMO_MODEL), [str(p) for p in DEMO_SAES.values()], device="cpu")
