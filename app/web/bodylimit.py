"""Request bodies past a size limit are refused (413) as they arrive, never read into memory.

The check runs when the route first reads its body, so the refusal goes through the app's own
error handlers (JSON under /api, a page elsewhere); routes that read no body pay nothing.
"""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        received = 0

        def refuse() -> HTTPException:
            return HTTPException(
                413, f"The request body is over the limit of {self.max_bytes:,} bytes."
            )

        async def limited() -> Message:
            nonlocal received
            if not declared.isdigit() or int(declared) > self.max_bytes:
                raise refuse()
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # chunked bodies declare no length
                raise refuse()
            return message

        await self.app(scope, limited, send)
