"""The app factory, health check and home page with and without a resident model."""

import pytest
from fastapi.testclient import TestClient

from app.core.sae import save_saelens
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import random_sae


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web") / '"><img src=x onerror=alert(1)>'
    save_saelens(random_sae(hook_name="blocks.1.hook_resid_post"), folder)
    return folder


def test_health_and_home_list_the_resident_model(gpt2_dir, sae_dir, tmp_path):
    settings = Settings(
        model=str(gpt2_dir), saes=[str(sae_dir)], device="cpu", data_dir=tmp_path / "data"
    )
    with TestClient(create_app(settings)) as client:
        health = client.get("/healthz").json()
        assert health["model"] == gpt2_dir.name and health["device"] == "cpu"
        (sae,) = health["saes"]
        assert sae["hook_name"] == "blocks.1.hook_resid_post" and sae["d_sae"] == 128
        page = client.get("/")
        assert page.status_code == 200
        assert "<img src=x" not in page.text  # hostile names are escaped
        assert sae["source"].endswith('"><img src=x onerror=alert(1)>')
        css = client.get("/static/css/monoscope.css")
        assert css.status_code == 200


def test_empty_server_renders(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        assert client.get("/healthz").json() == {
            "status": "ok",
            "model": None,
            "device": None,
            "saes": [],
            "harvested": [],
        }
        assert "No model is loaded" in client.get("/").text
