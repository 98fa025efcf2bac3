"""Every URL the server writes (links, share links, the API's `url` fields) names the server as
configured, never as the request's Host header says.

Starlette builds absolute URLs from the Host header, which any client sets: a request with
`Host: evil.example` got share links and API URLs pointing there, for whoever it was relayed
to. Here the header is replaced before the app reads it: by MONOSCOPE_BASE_URL when set (its
scheme and host; set it behind a proxy or a public name), else by the address of the socket
the request arrived on. A path prefix is uvicorn's --root-path, as before.
"""

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send


class CanonicalHost:
    def __init__(self, app: ASGIApp, base_url: str | None):
        self.app = app
        parts = urlsplit(base_url) if base_url else None
        self.scheme = parts.scheme if parts else None
        self.netloc = parts.netloc.encode("latin-1") if parts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        netloc = self.netloc
        if netloc is None:
            host, port = scope.get("server") or ("localhost", None)
            host = f"[{host}]" if ":" in host else host
            netloc = (host if port in (None, 80, 443) else f"{host}:{port}").encode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", netloc)]
        scope = dict(scope, headers=headers)
        if self.scheme:
            scope["scheme"] = self.scheme
        await self.app(scope, receive, send)
