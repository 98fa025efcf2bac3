"""A real HTTP server speaking the OpenAI chat-completions protocol, with scripted answers.

    with ScriptedLLM([ok("[EXPLANATION]: bridges"), status(429, retry_after=0)]) as llm:
        client = ChatClient(llm.url, model="scripted")

Each request takes the next scripted answer (the last one repeats). Answers: ok(text), status(code),
malformed(), slow(seconds, text). The server records every request body and header, and the most
requests it ever had in flight at once.
"""

import asyncio
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse


@dataclass(frozen=True)
class Answer:
    kind: str  # ok | status | malformed | slow
    text: str = ""
    code: int = 200
    delay: float = 0.0
    retry_after: float | None = None


def ok(text: str, delay: float = 0.0) -> Answer:
    return Answer("ok", text, delay=delay)


def status(code: int, retry_after: float | None = None) -> Answer:
    return Answer("status", code=code, retry_after=retry_after)


def malformed() -> Answer:
    return Answer("malformed")


def slow(seconds: float, text: str = "[EXPLANATION]: late") -> Answer:
    return Answer("ok", text, delay=seconds)


@dataclass
class ScriptedLLM:
    answers: list[Answer]
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(answer.delay)
            finally:
                self.in_flight -= 1
            if answer.kind == "status":
                headers = {}
                if answer.retry_after is not None:
                    headers["Retry-After"] = str(answer.retry_after)
                return JSONResponse(
                    {"error": {"message": f"scripted {answer.code}"}}, answer.code, headers=headers
                )
            if answer.kind == "malformed":
                return PlainTextResponse("<html>gateway says hi</html>")
            return JSONResponse(
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer.text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 120, "completion_tokens": 15, "total_tokens": 135},
                }
            )

        return app

    def __enter__(self) -> "ScriptedLLM":
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("scripted LLM server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
