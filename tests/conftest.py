import os

# This world has no model hub: fail fast instead of retrying network requests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from sqlalchemy import Engine, make_url, text

from app.core.model import LoadedModel, load_model
from app.db.engine import connect, migrate
from app.db.models import Base
from tests.helpers import build_model, build_relu_gpt2, random_sae

POSTGRES_URL = os.environ.get(
    "MONOSCOPE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# pytest-xdist names its workers gw0, gw1, ...; each gets a database of its own, since every
# test session starts by dropping the schema it tests on.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if XDIST_WORKER:
    # The workers share the machine's cores; torch's own threads on top would oversubscribe them.
    import torch

    torch.set_num_threads(
        max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
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
    url = _worker_database(POSTGRES_URL, XDIST_WORKER)
    with connect(url).begin() as connection:  # a clean slate for this test session
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    return url


def _worker_database(url: str, worker: str) -> str:
    """The URL of this xdist worker's own database beside `url`'s (created when missing), or
    `url` itself outside xdist."""
    if not worker:
        return url
    base = make_url(url)
    name = f"{base.database}_{worker}"
    admin = connect(url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


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
def relu_gpt2(tmp_path_factory) -> LoadedModel:
    """The tiny GPT-2 with ReLU MLPs, which `exact_transcoder` replaces exactly."""
    return load_model(build_relu_gpt2(tmp_path_factory.mktemp("relu_gpt2")), device="cpu")


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


def pytest_collection_modifyitems(items):
    """Mark the PostgreSQL runs of database tests, so `-m "not postgres"` keeps SQLite only; and
    run slow tests first, so that under xdist the longest (the demo's first start, minutes) is
    not the last one running while the other workers sit idle."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)
    if XDIST_WORKER:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable
