"""An OpenAI-compatible chat-completions client and the explainer built on it.

    client = ChatClient("http://localhost:11434/v1", model="llama3.1", api_key=None)
    explainer = LLMExplainer(client, concurrency=8, price_prompt=0.15, price_completion=0.6)
    outcomes = await explainer.explain_batch(evidence)

Works with OpenAI, vLLM, Ollama, llama.cpp's server and OpenRouter: POST {base}/chat/completions
with a bearer key. 429, 5xx, timeouts and dropped connections are retried with exponential backoff
(honouring Retry-After); other 4xx (no credit, bad key, unknown model) fail at once. A failure is
an Outcome with its reason, never an exception out of the batch.
"""

import asyncio
import random
from dataclasses import dataclass

import httpx

from app.autointerp.base import Outcome
from app.autointerp.evidence import FeatureEvidence
from app.autointerp.prompts import explainer_messages, parse_explanation

MAX_REPLY_EXCERPT = 200


class LLMError(Exception):
    """A request that failed for good; the message is the reason stored with the failure."""


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int
    completion_tokens: int


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REPLY_EXCERPT else text[:MAX_REPLY_EXCERPT] + "…"


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> "ChatClient":
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", headers=headers, timeout=self.timeout
        )
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._http is not None
        await self._http.aclose()
        self._http = None

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    async def chat(
        self, messages: list[dict[str, str]], max_tokens: int = 400, temperature: float = 0.0
    ) -> ChatReply:
        assert self._http is not None, "use `async with ChatClient(...)`"
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        reason = "no attempt"
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = await self._http.post("chat/completions", json=body)
            except httpx.TimeoutException:
                reason = f"timeout after {self.timeout:g} s"
            except httpx.TransportError as exc:
                reason = f"connection error: {exc.__class__.__name__}"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    reason = f"HTTP {response.status_code}: {_excerpt(response.text)}"
                elif response.status_code >= 400:
                    raise LLMError(f"HTTP {response.status_code}: {_excerpt(response.text)}")
                else:
                    return self._parse(response)
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response))
        raise LLMError(f"gave up after {self.max_retries + 1} attempts; last: {reason}")

    @staticmethod
    def _parse(response: httpx.Response) -> ChatReply:
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"malformed reply: {_excerpt(response.text)}") from exc
        if not isinstance(text, str):
            raise LLMError(f"malformed reply: {_excerpt(response.text)}")
        return ChatReply(
            text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )


class LLMExplainer:
    method = "openai"

    def __init__(
        self,
        client: ChatClient,
        concurrency: int = 8,
        price_prompt: float = 0.0,  # USD per million prompt tokens
        price_completion: float = 0.0,  # USD per million completion tokens
    ):
        self.client = client
        self.model = client.model
        self.concurrency = concurrency
        self.price_prompt = price_prompt
        self.price_completion = price_completion

    async def explain_batch(self, evidence: list[FeatureEvidence]) -> list[Outcome]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(item: FeatureEvidence) -> Outcome:
            async with limit:
                messages = explainer_messages(item, item.split()[0])
                try:
                    reply = await self.client.chat(messages)
                except LLMError as exc:
                    return Outcome(error=str(exc))
            cost = (
                reply.prompt_tokens * self.price_prompt
                + reply.completion_tokens * self.price_completion
            ) / 1e6
            label = parse_explanation(reply.text)
            error = None if label else f"unparseable reply: {_excerpt(reply.text)}"
            return Outcome(label, error, reply.prompt_tokens, reply.completion_tokens, cost)

        async with self.client:
            return list(await asyncio.gather(*(one(item) for item in evidence)))
