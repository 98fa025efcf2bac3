"""The first start: the port answers at once with the build's progress, then becomes the site."""

import threading

import httpx
from tqdm import tqdm

from app.settings import Settings
from app.web.app import create_app
from app.web.first_start import FirstStart
from tests.helpers import serving, wait_for


def test_the_site_shows_the_build_then_serves(engine):
    url = engine.url.render_as_string(hide_password=False)
    settings = Settings(database_url=url)
    release, halfway = threading.Event(), threading.Event()

    def build(progress):
        progress.set_stage("harvesting res1 (SAE 1 of 2)")
        with tqdm(total=400, desc="harvest") as bar:
            bar.update(100)
            halfway.set()
            release.wait(timeout=30)
            bar.update(300)

    app = FirstStart(settings, build, lambda: create_app(settings))
    with serving(app) as base:
        halfway.wait(timeout=10)
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 503 and health.headers["Retry-After"] == "3"
        assert health.json() | {"fraction": 0.25} == health.json()
        assert health.json()["stage"] == "harvesting res1 (SAE 1 of 2)"
        page = httpx.get(f"{base}/tiny/res1/0")  # any address: the build page
        assert page.status_code == 503 and "harvesting res1 (SAE 1 of 2)" in page.text
        assert (
            "100 of 400 (25%)" in page.text
            and "script-src 'self'" in page.headers["content-security-policy"]
        )
        release.set()
        wait_for(lambda: httpx.get(f"{base}/healthz").status_code == 200, 20, 0.05)
        assert httpx.get(f"{base}/").status_code == 200  # the real site, its lifespan run
        assert "Monoscope" in httpx.get(f"{base}/").text


def test_a_failed_build_says_why_and_keeps_answering(engine):
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False))

    def build(progress):
        progress.set_stage("harvesting")
        raise RuntimeError("no space left on device <b>")

    with serving(FirstStart(settings, build, lambda: create_app(settings))) as base:
        health = wait_for(
            lambda: (h := httpx.get(f"{base}/healthz")).json()["error"] and h, 20, 0.05
        )
        assert health.status_code == 503 and health.json()["status"] == "failed"
        page = httpx.get(f"{base}/")
        assert "The build stopped: no space left on device &lt;b&gt;" in page.text
