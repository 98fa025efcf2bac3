"""A real server in a thread and headless Chromium (the system build) driven by Playwright.

Failing tests leave a full-page screenshot in test-artifacts/.
"""

import os
import shutil
from pathlib import Path

import pytest

from app.db.accounts import add_user
from app.db.engine import connect, migrate, session_scope
from app.pipeline.config import EmbedLabelsConfig, MapConfig
from app.pipeline.embed_labels import EmbedLabelsJob
from app.pipeline.feature_map import MapJob
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import serving
from tests.web_world import build_demo_saes, build_world

CHROMIUM = os.environ.get("MONOSCOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


ACCOUNT = ("ada", "correct horse battery")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory, demo_workspace):
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'monoscope.db'}"
    engine = connect(url)
    migrate(engine)
    with session_scope(engine) as session:
        build_world(session)
        build_demo_saes(session, demo_workspace)  # contrast ranks over both SAEs
        add_user(session, *ACCOUNT)
    EmbedLabelsJob(EmbedLabelsConfig("tiny", "res1", progress=False), engine).run()
    demo_map = MapConfig("monoscope-demo", "res1", progress=False)
    MapJob(demo_map, engine, demo_workspace.saes["res1"]).run()
    engine.dispose()
    with serving(create_app(Settings(database_url=url), workspace=demo_workspace)) as base:
        yield base


@pytest.fixture(scope="package")  # Playwright's sync API holds an event loop while open: close
def browser():  # it before other packages' tests call asyncio.run()
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is not installed at {CHROMIUM}")
        pytest.skip(f"Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    page.requested = []  # every URL the page asked for: nothing may leave the server
    page.on("request", lambda r: page.requested.append(r.url))
    page.refused = []  # what the Content-Security-Policy blocked: pages must need nothing of it
    page.on(
        "console", lambda m: "Content Security Policy" in m.text and page.refused.append(m.text)
    )
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
