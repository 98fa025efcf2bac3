"""How people write one steering intervention, and the grammar shared by the CLI's -f and the
steering page's ?f= presets. Free of torch, so the CLI can state it in its help at no cost.

    model, feature = parse_feature_ref("monoscope-demo/res1/946:clamp:5")
    model, feature = parse_feature_ref("res1/946:cap:0.5:raw:generated")
    model, feature = parse_feature_ref("res1/946:clamp:4:when:res1/12>0.5")  # only where 12 fires
"""

import re
from dataclasses import dataclass
from typing import Literal

from app.core.errors import SteeringError

Mode = Literal["clamp", "add", "cap"]
MODES: tuple[Mode, ...] = ("clamp", "add", "cap")
Units = Literal["max_act", "raw"]
Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[Positions, ...] = ("all", "prompt", "generated")


@dataclass(frozen=True)
class FeatureCondition:
    """True at a position where the feature's activation, read as the model runs, exceeds
    `above` (raw activation units: the numbers feature pages show)."""

    sae: str
    index: int
    above: float

    def __str__(self) -> str:
        return f"{self.sae}/{self.index}>{self.above:g}"


@dataclass(frozen=True)
class SteeringFeature:
    """One intervention as a person states it: strength in raw units or multiples of max act."""

    sae: str
    index: int
    mode: Mode
    strength: float
    units: Units = "raw"
    positions: Positions = "all"
    when: FeatureCondition | None = None
    """Steer only at positions where this condition holds (Ember's conditional steering)."""


# How a steering feature is written everywhere (the CLI's -f, the steering page's ?f= presets):
# model and SAE names are single URL segments (app.core.names), so the slashes are unambiguous.
FEATURE_REF_SYNTAX = (
    "[MODEL/]SAE/INDEX:clamp|add|cap:STRENGTH[:max_act|raw][:all|prompt|generated][:when:CONDITION]"
)
CONDITION_SYNTAX = "SAE/INDEX>LEVEL"  # LEVEL in raw activation units
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
_CONDITION = rf"(?P<when_sae>[^/:\s>]+)/(?P<when_index>\d{{1,12}})>(?P<when_above>{_NUMBER})"
_FEATURE_REF = re.compile(
    r"(?:(?P<model>[^/:\s]+)/)?(?P<sae>[^/:\s]+)/(?P<index>\d{1,12}):(?P<mode>clamp|add|cap):"
    rf"(?P<strength>{_NUMBER})(?::(?P<units>max_act|raw))?"
    rf"(?::(?P<positions>all|prompt|generated))?(?::when:{_CONDITION})?"
)
_CONDITION_REF = re.compile(_CONDITION)


def _condition(found: re.Match) -> FeatureCondition:
    return FeatureCondition(found["when_sae"], int(found["when_index"]), float(found["when_above"]))


def parse_condition(text: str) -> FeatureCondition:
    """A FeatureCondition from CONDITION_SYNTAX, e.g. "res1/12>0.5" (stop conditions)."""
    found = _CONDITION_REF.fullmatch(text.strip())
    if found is None:
        raise SteeringError(
            f"bad condition {text[:80]!r}: write {CONDITION_SYNTAX}, e.g. res1/12>0.5"
        )
    return _condition(found)


def parse_feature_ref(text: str) -> tuple[str | None, SteeringFeature]:
    """(model or None, feature) from FEATURE_REF_SYNTAX; the strength is in multiples of the
    feature's max activation unless :raw follows it, and applies at every position unless
    :prompt or :generated says otherwise, and only where its :when: condition holds."""
    found = _FEATURE_REF.fullmatch(text.strip())
    if found is None:
        raise SteeringError(
            f"bad feature {text[:80]!r}: write {FEATURE_REF_SYNTAX}, "
            "e.g. monoscope-demo/res1/946:clamp:5"
        )
    units: Units = "raw" if found["units"] == "raw" else "max_act"
    mode = next(m for m in MODES if m == found["mode"])
    positions = next(p for p in POSITIONS if p == (found["positions"] or "all"))
    feature = SteeringFeature(
        found["sae"],
        int(found["index"]),
        mode,
        float(found["strength"]),
        units=units,
        positions=positions,
        when=_condition(found) if found["when_sae"] else None,
    )
    return found["model"], feature
