"""The real server as benchmarks drive it: `uvicorn --factory app.web.app:create_app` in its own
process, configured through MONOSCOPE_* environment variables.

    with running_server({"MONOSCOPE_DATABASE_URL": url}, "--workers", "2") as base:
        httpx.get(f"{base}/healthz")
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from app.web.server import REQUEST_HEAD_LIMIT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(
    settings: Mapping[str, str],
    *uvicorn_args: str,
    drop: tuple[str, ...] = (),
    start_timeout: float = 60.0,
) -> Iterator[str]:
    """Start the server with these settings (and without the `drop` ones from our environment),
    wait until /healthz answers, yield its base URL, stop it on exit."""
    port = _free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1"} | dict(settings)
    for name in drop:
        env.pop(name, None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.web.app:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--h11-max-incomplete-event-size",
            str(REQUEST_HEAD_LIMIT),
            *uvicorn_args,
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
