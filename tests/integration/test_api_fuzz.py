"""Schemathesis against /openapi.json: every operation, pages included, on generated inputs.

A real server (uvicorn in a thread) on a stored world with the demo model loaded, so the live
routes run the model. Writes carry an API key, so they get past 401 and reach the database.
Whatever the input, the answer must never be a 5xx.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from app.db import accounts
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.conftest import empty_database
from tests.helpers import serving
from tests.web_world import PASSWORD, build_demo_rows, build_world

pytestmark = pytest.mark.slow  # schemathesis over every operation

# Per operation and phase. Derandomized, so CI sees the same inputs on every run: a failure
# belongs to the change that caused it. Explore further by raising EXAMPLES locally.
EXAMPLES = 25


@pytest.fixture(scope="module")
def served(database_url, demo_workspace):
    """One server per database for every operation: what one request writes, later ones meet."""
    engine = empty_database(database_url)
    with session_scope(engine) as session:
        build_world(session)
        build_demo_rows(session, demo_workspace)
        _, secret = accounts.create_key(session, accounts.add_user(session, "ada", PASSWORD), "t")
    app_settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        write_rate_per_minute=1_000_000,  # the limiter would answer 429 before the input is read
        steer_rate_per_minute=1_000_000,
        steer_max_new_tokens=8,
    )
    with serving(create_app(app_settings, workspace=demo_workspace)) as base:
        yield base, {"Authorization": f"Bearer {secret}"}
    engine.dispose()


# The document is static: read at collection from the app the server runs, one test each.
schema = schemathesis.openapi.from_dict(create_app(Settings(secret_key="unused")).openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_no_generated_request_gets_a_server_error(case, served):
    base, key = served
    case.call_and_validate(base_url=base, headers=key, checks=[not_a_server_error], timeout=60)
