"""Security headers on every response.

The pages run no inline script (page state travels in `application/json` blocks, code in
/static), so the Content-Security-Policy allows scripts from this server only; styles also
inline, since htmx adds its indicator style and charts carry style attributes. Pages refuse to
be framed by other sites, except a feature page asked for with `?embed=1`, which exists to be
put in an iframe.
"""

from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        embed = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("embed") == ["1"]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                framing = "*" if embed else "'none'"
                headers["Content-Security-Policy"] = f"{POLICY}; frame-ancestors {framing}"
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
                if not embed:
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, with_headers)
