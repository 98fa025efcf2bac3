"""Explainers and judges as the settings choose them; the CLI and `add-sae` build them here.

    explainer = build_explainer("offline", settings, offline=..., resident=...)

Building one may need the database (the offline explainer's token frequencies) or a model (the
self-explainer): the caller passes those as functions, called only for the explainer chosen.
"""

from collections.abc import Callable

from app.autointerp.base import Explainer
from app.autointerp.llm import ChatClient, LLMExplainer
from app.autointerp.offline import OfflineExplainer
from app.autointerp.scoring import JUDGED_SCORERS, LLMJudge
from app.autointerp.self_explain import SelfExplainer
from app.core.errors import MonoscopeError
from app.core.model import LoadedModel
from app.settings import Settings

EXPLAINERS = ("offline", "openai", "self")


def chat_client(settings: Settings) -> ChatClient:
    """The OpenAI-compatible endpoint the settings name (MONOSCOPE_EXPLAINER_*)."""
    if not settings.explainer_base_url:
        raise MonoscopeError("an LLM explainer or judge needs MONOSCOPE_EXPLAINER_BASE_URL")
    key = settings.explainer_api_key
    return ChatClient(
        settings.explainer_base_url,
        settings.explainer_model,
        key.get_secret_value() if key else None,
        timeout=settings.explainer_timeout,
    )


def build_explainer(
    name: str | None,
    settings: Settings,
    offline: Callable[[], OfflineExplainer],
    resident: Callable[[], LoadedModel],
) -> Explainer:
    """The explainer called `name`; None picks openai when an endpoint is set, else offline."""
    name = name or ("openai" if settings.explainer_base_url else "offline")
    if name == "offline":
        return offline()
    if name == "openai":
        return LLMExplainer(
            chat_client(settings),
            settings.explainer_concurrency,
            settings.explainer_price_prompt,
            settings.explainer_price_completion,
        )
    if name == "self":
        return SelfExplainer(resident())
    raise MonoscopeError(f"unknown explainer {name!r}; use {', '.join(EXPLAINERS)}")


def default_scorers(settings: Settings) -> list[str]:
    """The offline scores always; detection too when an LLM endpoint is set."""
    offline = ["keyword", "embedding"]
    return [*offline, "detection"] if settings.explainer_base_url else offline


def build_judge(settings: Settings, scorers: list[str]) -> LLMJudge | None:
    """The LLM judge detection and fuzzing need, when they are asked for and an endpoint is set
    (without one, run_score refuses them with the reason)."""
    if any(s in JUDGED_SCORERS for s in scorers) and settings.explainer_base_url:
        return LLMJudge(chat_client(settings))
    return None
