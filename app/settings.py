"""One typed Settings object, read from MONOSCOPE_* environment variables (or a .env file).

    settings = Settings()                                  # from the environment
    settings = Settings(model="gpt2", saes=["sae/dir"])    # in code and tests

Field descriptions double as CLI help and README documentation.
"""

import re
import secrets
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.device import resolve_device
from app.core.errors import MonoscopeError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONOSCOPE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("data"), description="Folder for the database, token stores and harvest outputs."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database, e.g. postgresql://user@host/monoscope; "
        "default: SQLite file monoscope.db in the data directory.",
    )
    device: str = Field(
        "auto",
        description="Where models run: auto (CUDA when available, else CPU), cpu, cuda, cuda:N.",
    )
    model: str | None = Field(
        None, description="The causal LM to serve: a Hugging Face hub id or a local directory."
    )
    saes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SAEs to attach to the model, comma-separated: SAELens or sparsify "
        "directories, "
        "Gemma Scope params.npz files, or hf://owner/repo/folder.",
    )
    transcoders: str | None = Field(
        None,
        description="One transcoder per layer for attribution graphs: a circuit-tracer set "
        "(config.yaml) or a folder of layer_0, layer_1, ... transcoders (the demo serves its "
        "own).",
    )
    graph_max_features: int = Field(
        4096,
        ge=0,
        description="Most feature nodes in one attribution graph; beyond that, the most "
        "influential are kept.",
    )
    steer_max_features: int = Field(
        8, ge=1, le=64, description="Features one steering chat may set."
    )
    steer_max_new_tokens: int = Field(
        256, ge=1, le=4096, description="Most tokens one steered reply may generate."
    )
    steer_max_prompt_tokens: int = Field(
        1024, ge=16, description="Longest conversation or prompt, in tokens, a reply may follow."
    )
    steer_queue: int = Field(
        32, ge=1, description="Generations that may wait for the model; beyond that, HTTP 503."
    )
    steer_batch_rows: int = Field(
        64, ge=2, description="Most rows (two per chat: default and steered) in one batch."
    )
    steer_batch_invariant: bool = Field(
        True,
        description="Decode shared batches on fixed row tiles, so a reply never depends on who "
        "shares the batch (0.73-0.92 of plain throughput on CPU); false: faster, and a reply "
        "may differ from the same request alone in rare tokens.",
    )
    steer_rate_per_minute: int = Field(
        30, ge=1, description="Generations one client (IP address) may start per minute (429)."
    )
    require_sign_in: bool = Field(
        False, description="Readers must sign in (or send an API key) to see any page or API."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Signs session cookies; unset: a random key kept in the data directory "
        "(file secret_key), so sessions survive restarts. Set it when several servers share "
        "users.",
    )
    secure_cookies: bool = Field(
        False, description="Send the session cookie over HTTPS only (set it behind TLS)."
    )
    write_rate_per_minute: int = Field(
        60, ge=1, description="Writes one API key, user or IP address may make per minute (429)."
    )
    max_body_bytes: int = Field(
        2_000_000, ge=1024, description="Largest request body the server reads (HTTP 413 beyond)."
    )
    sign_in_rate_per_minute: int = Field(
        10, ge=1, description="Sign-in attempts one IP address may make per minute (429)."
    )
    explainer_base_url: str | None = Field(
        None,
        description="OpenAI-compatible chat-completions endpoint for LLM labels and scores, e.g. "
        "https://api.openai.com/v1, http://localhost:11434/v1 (Ollama), http://localhost:8080/v1 "
        "(llama.cpp, vLLM) or https://openrouter.ai/api/v1; unset: the offline explainer.",
    )
    explainer_model: str = Field("gpt-4o-mini", description="Model name sent to that endpoint.")
    explainer_api_key: SecretStr | None = Field(
        None, description="Bearer key for that endpoint (never logged or stored)."
    )
    explainer_concurrency: int = Field(
        8, ge=1, le=256, description="Requests in flight at once to the endpoint."
    )
    explainer_timeout: float = Field(
        60.0, gt=0, description="Seconds before a request to the endpoint is retried."
    )
    explainer_price_prompt: float = Field(
        0.0, ge=0, description="USD per million prompt tokens, for the cost of each run."
    )
    explainer_price_completion: float = Field(
        0.0, ge=0, description="USD per million completion tokens, for the cost of each run."
    )
    replicas: int = Field(
        0,
        ge=0,
        le=64,
        description="Run the model as this many Ray actors behind the web tier, one GPU each "
        "where the cluster has GPUs (the web process keeps a CPU copy for tokenizing); 0: in the "
        "server's own process.",
    )
    ray_address: str = Field(
        "local",
        description="The Ray cluster replicas join: local (start one on this machine), auto (the "
        "cluster this machine belongs to) or a head's address, e.g. ray://head:10001.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis that web workers share their rate limits through (sign-in, writes, "
        "generations), e.g. redis://127.0.0.1:6379/0; unset: each process keeps its own.",
    )
    base_url: str | None = Field(
        None,
        description="The server's public address, e.g. https://monoscope.example.org: every link "
        "and share URL names it; unset: the address the request arrived at (never its Host "
        "header). Set it behind a proxy.",
    )
    trusted_proxies: str = Field(
        "",
        description="Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: "
        "addresses or networks, comma-separated (e.g. 127.0.0.1 behind a local nginx); empty: "
        "none, and every client is known by its own address.",
    )
    head_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's head before the "
        "server closes the connection (slow clients cannot hold sockets).",
    )
    host: str = Field("127.0.0.1", description="Address the web server listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the web server listens on.")

    @property
    def database(self) -> str:
        """The database URL in force: database_url, or SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'monoscope.db'}"

    @property
    def web_device(self) -> str:
        """Where the server's own copy of the model runs: the device, or the CPU when replicas
        hold the accelerators (the copy then only tokenizes and checks requests)."""
        return "cpu" if self.replicas else self.device

    def session_secret(self) -> str:
        """secret_key, or the data directory's own random key (made on first use)."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()

    @field_validator("saes", mode="before")
    @classmethod
    def _split_sae_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"https?://[^/?#\s]+/?", value):
            raise ValueError("base_url is a scheme and host, e.g. https://monoscope.example.org")
        return value or None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        try:
            resolve_device(value)
        except MonoscopeError as exc:
            raise ValueError(str(exc)) from exc
        return value
