"""uvicorn with the limits a server facing unknown clients needs.

    uvicorn.run(create_app(settings), **server_options(settings))

- Request heads may be long: texts typed into GET forms reach 20,000 characters, up to 180 KB
  percent-encoded, past h11's default of 16 KiB (REQUEST_HEAD_LIMIT).
- A request head must arrive within `head_timeout` seconds. uvicorn waits for a head that
  trickles in for as long as the client likes, so a few hundred sockets sending a byte now and
  then would hold the server's connections for ever; `SlowHeadGuard` closes them.
- X-Forwarded-For is believed only from `trusted_proxies`. uvicorn believes it from 127.0.0.1
  by default, so any local client could claim another address in every request and start each
  per-address limit (sign-in, writes, generations) afresh.
"""

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import Settings

REQUEST_HEAD_LIMIT = 256 * 1024


class SlowHeadGuard(H11Protocol):
    """h11 with a deadline for each request head, from the connection (or the end of the last
    response) to the head's last byte; past it the connection is closed."""

    head_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle  # a new cycle means a new head has arrived whole
        self._deadline = self.loop.call_later(self.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._waiting_after:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def server_options(settings: Settings) -> dict:
    """Keyword arguments for uvicorn.run / uvicorn.Config that apply these limits."""
    guard = type("SlowHeadGuard", (SlowHeadGuard,), {"head_timeout": settings.head_timeout})
    trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    return {
        "http": guard,
        "h11_max_incomplete_event_size": REQUEST_HEAD_LIMIT,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or [],
    }
