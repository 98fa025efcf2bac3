"""The team deployment: docker-compose.yml parsed by the Compose client (no Docker engine runs
here), and the image holding every folder the server reads at run time."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> list[str]:
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if plugin and plugin.returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if os.environ.get("CI"):
        pytest.fail("CI needs a Compose client (.ci/run installs Debian's docker-compose)")
    pytest.skip("no Compose client here")


def _config(*files: str) -> dict:
    args = [a for f in files for a in ("-f", f)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONOSCOPE_", "POSTGRES_"))}
    done = subprocess.run(
        [*_compose(), *args, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_runs_the_app_on_postgres_16_with_healthchecks_and_volumes():
    config = _config("docker-compose.yml")
    app, db = config["services"]["app"], config["services"]["db"]
    assert db["image"] == "postgres:16" and "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(app["healthcheck"]["test"])
    url = app["environment"]["MONOSCOPE_DATABASE_URL"]
    assert url.startswith("postgresql://monoscope:") and url.endswith("@db:5432/monoscope")
    assert app["command"] == ["monoscope", "demo"]
    redis = config["services"]["redis"]  # the rate limits every web worker shares
    assert app["environment"]["MONOSCOPE_REDIS_URL"] == "redis://redis:6379/0"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert redis["image"].startswith("redis:") and "ping" in " ".join(redis["healthcheck"]["test"])
    assert {"monoscope-data", "postgres-data"} <= set(config["volumes"])
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in app["volumes"]]
    assert any(m.split(":")[:2] == ["monoscope-data", "/data"] for m in mounts)


def test_the_ray_profile_adds_a_head_and_workers_on_the_shared_volumes():
    services = _config("docker-compose.yml")["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["profiles"] == worker["profiles"] == ["ray"]  # off unless asked for
    assert head["command"][:3] == ["ray", "start", "--head"] and "--block" in head["command"]
    assert "--address=ray-head:6379" in worker["command"]
    for service in (head, worker):  # token stores and models where the app sees them
        targets = {
            v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service["volumes"]
        }
        assert {"/data", "/models"} <= targets
        assert service["environment"]["RAY_USAGE_STATS_ENABLED"] == "0"
    gpu_worker = _config("docker-compose.yml", "docker-compose.gpu.yml")["services"]["ray-worker"]
    [device] = gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["count"] == "all" and "gpu" in device["capabilities"]


def test_the_gpu_override_reserves_an_nvidia_device():
    app = _config("docker-compose.yml", "docker-compose.gpu.yml")["services"]["app"]
    [device] = app["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert app["environment"]["MONOSCOPE_DEVICE"] == "cuda"


def test_the_image_holds_what_the_server_reads_at_run_time():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {
        part.rstrip("/")
        for line in lines
        if line.startswith("COPY")
        for part in line.split()[1:-1]
        if not part.startswith("--")
    }
    assert {"app", "templates", "static", "migrations", "alembic.ini"} <= copied
    assert any("node_modules" in line for line in lines if line.startswith("COPY --from=assets"))
    assert any("npm ci" in line for line in lines)
    # editable, so the server reads the tree; with Ray, so the same image runs the Ray services
    assert any("pip install" in line and '-e ".[ray]"' in line for line in lines)
