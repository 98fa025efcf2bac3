"""The explainer prompt (examples with <<marked>> tokens and 0-10 activations, plus logit
effects) and the parser for its reply's final `[EXPLANATION]:` line."""

import re

from app.autointerp.evidence import FeatureEvidence, format_example, scaled_activations

SYSTEM = (
    "You are a meticulous AI researcher explaining one neuron-like feature of a language model. "
    "You see text excerpts where the feature fires; the tokens where it fires are marked "
    "<<like this>>, and after each excerpt the firing tokens are listed with their activation "
    "on a 0-10 scale. You may also see which output tokens the feature promotes. Find the "
    "pattern: which tokens, words, phrases or ideas make it fire, and in which contexts. Think "
    "briefly, then end your reply with one line of the form\n"
    "[EXPLANATION]: <a concise explanation, a few words to one sentence>"
)
MAX_LABEL = 300
_EXPLANATION = re.compile(r"\[EXPLANATION\]\s*:\s*(.+)", re.IGNORECASE)


def explainer_messages(evidence: FeatureEvidence, examples) -> list[dict[str, str]]:
    parts = []
    for number, example in enumerate(examples, 1):
        values = ", ".join(
            f"({t.strip()!r}, {v})" for t, v in scaled_activations(example, evidence.max_act)
        )
        parts.append(
            f"Example {number}: {format_example(example, evidence.max_act)}\nActivations: {values}"
        )
    if evidence.top_logits:
        parts.append(
            "Tokens the feature promotes: " + ", ".join(repr(t) for t in evidence.top_logits)
        )
    if evidence.bottom_logits:
        parts.append("Tokens it suppresses: " + ", ".join(repr(t) for t in evidence.bottom_logits))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_explanation(reply: str) -> str | None:
    """The text of the reply's last [EXPLANATION]: line, or None when there is none."""
    found = _EXPLANATION.findall(reply or "")
    if not found:
        return None
    text = found[-1].strip().strip("\"'` ").strip()
    return text[:MAX_LABEL] or None
