"""Rate limits shared by several web workers through Redis (MONOSCOPE_REDIS_URL)."""

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from app.db import accounts
from app.db.engine import session_scope
from app.settings import Settings
from app.web.ratelimit import RateLimiter, RedisRateLimiter, rate_limiter
from tests.web_world import PASSWORD, form_token

# Each xdist worker flushes a database of its own: 15 for gw0 (or no xdist), 14 for gw1, ...
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
REDIS_URL = os.environ.get("MONOSCOPE_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{15 - _WORKER}")


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    client.flushdb()
    yield client
    client.flushdb()


def test_a_redis_window_counts_every_use_and_slides(redis_client):
    first = RedisRateLimiter(redis_client, "test", per_minute=2, window=1.0)
    other_worker = RedisRateLimiter(redis_client, "test", per_minute=2, window=1.0)
    assert first.check("1.2.3.4") is None and other_worker.check("1.2.3.4") is None
    assert first.check("1.2.3.4") == 1 and other_worker.check("1.2.3.4") == 1  # shared
    assert first.check("5.6.7.8") is None  # per client
    time.sleep(1.1)
    assert other_worker.check("1.2.3.4") is None  # the window moved on
    assert isinstance(rate_limiter(Settings(), "x", 5), RateLimiter)
    assert isinstance(rate_limiter(Settings(redis_url=REDIS_URL), "x", 5), RedisRateLimiter)


def _workers(env: dict, n: int):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.web.app:create_app",
            "--port",
            str(port),
            "--workers",
            str(n),
            "--log-level",
            "warning",
            "--no-proxy-headers",
        ],
        env=os.environ | env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return server, base
        except httpx.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.2)


def _attempt(base: str) -> int:
    """A sign-in on a fresh connection: the kernel hands it to either worker."""
    with httpx.Client(base_url=base) as client:
        token = form_token(client.get("/login").text)
        data = {"name": "ada", "password": "wrong", "csrf_token": token}
        return client.post("/login", data=data).status_code


@pytest.mark.slow
def test_two_web_workers_share_one_sign_in_limit(engine, redis_client):
    with session_scope(engine) as session:
        accounts.add_user(session, "ada", PASSWORD)
    env = {
        "MONOSCOPE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "MONOSCOPE_SECRET_KEY": "shared by both workers",
        "MONOSCOPE_REDIS_URL": REDIS_URL,
        "MONOSCOPE_SIGN_IN_RATE_PER_MINUTE": "3",
        "MONOSCOPE_MODEL": "",
    }
    server, base = _workers(env, 2)
    try:
        codes = [_attempt(base) for _ in range(12)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert codes.count(400) == 3 and codes.count(429) == 9, codes
