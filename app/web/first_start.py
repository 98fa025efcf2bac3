"""A server that answers at once while its database is still being built.

    app = FirstStart(settings, build=fill_database, ready=lambda: create_app(settings, workspace))
    uvicorn.run(app, **server_options(settings))

On a loaded 2-core machine the demo's first start took 40 minutes with nothing listening on the
port, so a newcomer saw a refused connection and no reason. Here the port answers from the first
second: every page is a "building the database" page with the stage and its progress, which
reloads itself (a meta refresh: no script, so it keeps the site's CSP), `/healthz` answers 503
with the same in JSON, and once `build` returns the real app (`ready()`, its lifespan run here)
serves every request. A failed build is shown with its reason instead of progress.
"""

import asyncio
import html
import json
import threading
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import SimpleNamespace

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from tqdm import tqdm

from app.settings import Settings
from app.web.headers import POLICY

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<title>Building the database · Monoscope</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}}
progress{{width:100%}}.muted{{color:#666}}</style></head>
<body><h1>Monoscope is building its database</h1>
<p>{stage}</p>{bar}
<p class="muted">This page reloads itself and turns into the site when the database is ready.
It happens once: later starts serve at once.</p></body></html>"""


class BuildProgress:
    """What the build is doing now: a stage set by the build, figures read off its tqdm bar."""

    def __init__(self) -> None:
        self.stage = "starting"
        self.error: str | None = None

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def figures(self) -> dict:
        with tqdm.get_lock():  # tqdm's own registry of live bars, as its write() walks it
            bars = [bar for bar in tqdm._instances if not bar.disable]
        if not bars:
            return {}
        bar = bars[-1].format_dict
        done, total = bar["n"], bar["total"]
        return {
            "step": bar.get("prefix") or "",
            "done": done,
            "total": total,
            "fraction": done / total if total else None,
        }


class FirstStart:
    def __init__(
        self,
        settings: Settings,
        build: Callable[[BuildProgress], None],
        ready: Callable[[], FastAPI],
    ):
        self.state = SimpleNamespace(settings=settings)  # as on the app it becomes
        self.progress = BuildProgress()
        self._build, self._ready = build, ready
        self._app: FastAPI | None = None
        self._stack = AsyncExitStack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self._app is not None:
            await self._app(scope, receive, send)
        elif scope["type"] == "http":
            await self._building(scope, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                threading.Thread(target=self._run_build, args=(loop,), daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _run_build(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._build(self.progress)
        except Exception as exc:  # shown on every page; the server stays up to say so
            self.progress.error = str(exc) or type(exc).__name__
            return
        asyncio.run_coroutine_threadsafe(self._open(), loop)

    async def _open(self) -> None:
        try:
            app = self._ready()
            await self._stack.enter_async_context(app.router.lifespan_context(app))
        except Exception as exc:
            self.progress.error = str(exc) or type(exc).__name__
            return
        self._app = app

    async def _building(self, scope: Scope, send: Send) -> None:
        figures = self.progress.figures()
        progress = self.progress
        status = {
            "status": "failed" if progress.error else "building",
            "stage": progress.stage,
            "error": progress.error,
            **figures,
        }
        if scope["path"].endswith("/healthz"):
            body, kind = json.dumps(status).encode(), b"application/json"
        else:
            body, kind = self._page(status).encode(), b"text/html; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", kind),
                    (b"retry-after", b"3"),
                    (b"cache-control", b"no-store"),
                    (b"content-security-policy", f"{POLICY}; frame-ancestors 'none'".encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _page(status: dict) -> str:
        if status["error"]:
            stage = f"The build stopped: {html.escape(status['error'])}. Fix it and start again."
            return PAGE.format(stage=stage, bar="")
        stage = html.escape(status["stage"])
        fraction = status.get("fraction")
        bar = ""
        if fraction is not None:
            bar = (
                f'<progress value="{fraction:.3f}"></progress><p class="muted">'
                f"{html.escape(str(status['step']))} {status['done']:,.0f} of "
                f"{status['total']:,.0f} ({fraction:.0%})</p>"
            )
        return PAGE.format(stage=stage, bar=bar)
