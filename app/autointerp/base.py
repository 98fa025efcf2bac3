"""What every explainer and scorer returns: a result or a failure with its reason, and its cost."""

from dataclasses import dataclass
from typing import Protocol

from app.autointerp.evidence import FeatureEvidence


@dataclass(frozen=True)
class Outcome:
    text: str | None = None  # the label, or None on failure
    error: str | None = None  # why it failed: stored, shown and retried, never scored
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Explainer(Protocol):
    method: str  # offline | openai | self
    model: str  # what produced the label, stored with it

    async def explain_batch(self, evidence: list[FeatureEvidence]) -> list[Outcome]: ...
