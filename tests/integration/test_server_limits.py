"""The real server (uvicorn with server_options) against slow and lying clients."""

import socket
import time

import httpx
import pytest

from app.db import accounts
from app.db.engine import session_scope
from app.settings import Settings
from app.web.app import create_app
from tests.helpers import serving
from tests.web_world import PASSWORD, form_token


def _app(engine, **settings):
    url = engine.url.render_as_string(hide_password=False)
    return create_app(Settings(database_url=url, **settings))


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


@pytest.mark.slow
def test_slow_request_heads_are_cut_off_and_the_server_keeps_answering(engine):
    with serving(_app(engine, head_timeout=1.0)) as base:
        slow = []
        for _ in range(200):  # each sends half a head, then waits
            s = socket.create_connection(("127.0.0.1", _port(base)))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        started = time.monotonic()
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # not starved
        for s in slow:
            s.settimeout(10)
            s.sendall(b"a")  # a trickle does not earn more time
        closed = 0
        for s in slow:
            try:
                closed += s.recv(1024) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
            s.close()
        assert closed == len(slow)
        assert time.monotonic() - started < 8
        with httpx.Client(base_url=base) as client:  # keep-alive requests are not cut short
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
                time.sleep(0.4)


def _sign_in_attempts(base: str, forwarded_for: list[str]) -> list[int]:
    codes = []
    with httpx.Client(base_url=base) as client:
        token = form_token(client.get("/login").text)
        for address in forwarded_for:
            answer = client.post(
                "/login",
                headers={"X-Forwarded-For": address},
                data={"name": "ada", "password": "wrong", "csrf_token": token},
            )
            codes.append(answer.status_code)
    return codes


def test_a_forged_forwarded_for_does_not_reset_per_address_limits(engine):
    with session_scope(engine) as session:
        accounts.add_user(session, "ada", PASSWORD)
    forged = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    with serving(_app(engine, sign_in_rate_per_minute=2)) as base:
        assert _sign_in_attempts(base, forged) == [400, 400, 429, 429]
    # behind a configured proxy the header is the client's address, as it should be
    with serving(_app(engine, sign_in_rate_per_minute=2, trusted_proxies="127.0.0.1")) as base:
        assert _sign_in_attempts(base, forged) == [400, 400, 400, 400]
