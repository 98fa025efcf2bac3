"""The self-explainer: the resident model labels its own features, with no network.

Worth it for chat models that follow instructions; a small base model mostly fails to produce an
[EXPLANATION]: line, and that is stored as a failure with the reply, never as a label.
"""

from app.autointerp.base import Outcome
from app.autointerp.evidence import FeatureEvidence
from app.autointerp.llm import _excerpt
from app.autointerp.prompts import explainer_messages, parse_explanation
from app.core.generation import GenerationRow, SamplingParams, chat_prompt_ids, complete
from app.core.model import LoadedModel

MAX_EXAMPLES = 8


class SelfExplainer:
    method = "self"

    def __init__(self, resident: LoadedModel, max_new_tokens: int = 80):
        self.resident = resident
        self.model = resident.name
        self.max_new_tokens = max_new_tokens
        self.context = resident.context_length or 1024

    def _prompt(self, item: FeatureEvidence) -> tuple[list[int], tuple[str, ...]] | None:
        """The longest prompt (fewest examples dropped) that leaves room for the reply."""
        shown = item.split()[0][:MAX_EXAMPLES]
        for n in range(len(shown), 0, -1):
            ids, stops = chat_prompt_ids(
                self.resident.tokenizer, explainer_messages(item, shown[:n])
            )
            if len(ids) + self.max_new_tokens <= self.context:
                return ids, stops
        return None

    async def explain_batch(self, evidence: list[FeatureEvidence]) -> list[Outcome]:
        outcomes = []
        for item in evidence:
            prompt = self._prompt(item)
            if prompt is None:
                outcomes.append(
                    Outcome(error=f"prompt longer than the model's {self.context} tokens")
                )
                continue
            ids, stops = prompt
            params = SamplingParams(self.max_new_tokens, temperature=0.0, stop_strings=stops)
            [reply] = complete(self.resident, {}, [GenerationRow(ids)], params)
            label = parse_explanation(reply)
            error = None if label else f"unparseable reply: {_excerpt(reply)}"
            outcomes.append(Outcome(label, error, len(ids), self.max_new_tokens))
        return outcomes
