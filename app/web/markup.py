"""Token strips as HTML, built in Python: the one hot path where a template is too slow.

A feature page shows about 3,000 tokens; a Jinja macro call per token cost more than every
database query of the page together. Token text still goes through markupsafe.escape, exactly as
autoescaping would (once per vocabulary entry, cached with the vocabulary); numbers are formatted,
never copied. Values ride in data-value, which static/js/monoscope.js shows on hover.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from app.db.models import Model
from app.db.queries import vocabulary

SPECIAL_TOKEN = ("<|", "|>")


def display_token(text: str) -> str:
    """Whitespace a reader can see: a newline token shows as ↵, a tab as ⇥."""
    return text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍") or "∅"


@dataclass(slots=True)  # thousands per page: plain slots build several times faster than frozen
class TokenCell:
    text: str
    value: float
    intensity: float  # 0..1, the highlight's opacity
    peak: bool
    special: bool
    position: int


def token_cells(
    texts: list[str], activations: np.ndarray, scale: float, start: int = 0, end: int | None = None
) -> list[TokenCell]:
    """Highlight cells for texts[start:end], intensity relative to `scale` (the feature's max)."""
    end = len(texts) if end is None else end
    peak = int(activations.argmax()) if len(activations) and activations.max() > 0 else -1
    window = np.asarray(activations[start:end], dtype=np.float64)
    values = window.tolist()
    intensities = np.clip(window / (scale if scale > 0 else 1.0), 0.0, 1.0).round(3).tolist()
    cells = []
    for offset, (value, intensity) in enumerate(zip(values, intensities, strict=True)):
        i = start + offset
        text = texts[i]
        special = text.startswith(SPECIAL_TOKEN[0]) and text.endswith(SPECIAL_TOKEN[1])
        cells.append(TokenCell(display_token(text), value, intensity, i == peak, special, i))
    return cells


def _classes(value: float, peak: bool, special: bool) -> str:
    return (
        "tok"
        + (" peak" if peak else "")
        + (" special" if special else "")
        + (" on" if value > 0 else "")
    )


def token_strip(cells: Sequence[TokenCell]) -> Markup:
    """A strip for tokens that are not vocabulary entries (typed text, decoded by the tokenizer)."""
    parts = ['<span class="tokens">']
    for c in cells:
        parts.append(
            f'<span class="{_classes(c.value, c.peak, c.special)}" style="--a:{c.intensity:g}" '
            f'data-pos="{c.position:d}" data-value="{c.value:.3f}">{escape(c.text)}</span>'
        )
    parts.append("</span>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class TokenTexts:
    """A model's vocabulary three ways: raw text (for JSON), escaped display text, special flag."""

    raw: list[str]
    shown: list[str]
    special: list[bool]

    @classmethod
    def of(cls, vocab: list[str]) -> "TokenTexts":
        return cls(
            vocab,
            [str(escape(display_token(t))) for t in vocab],
            [t.startswith(SPECIAL_TOKEN[0]) and t.endswith(SPECIAL_TOKEN[1]) for t in vocab],
        )

    def shown_at(self, token_id: int) -> str:
        return self.shown[token_id] if 0 <= token_id < len(self.shown) else f"&lt;{token_id}&gt;"

    def raw_at(self, token_id: int) -> str:
        return self.raw[token_id] if 0 <= token_id < len(self.raw) else f"<{token_id}>"


class TokenTextCache:
    """Per-process TokenTexts per model: pages render token text without a query.

    Keyed by the model row's id and source, so a model re-imported under the same name from
    elsewhere is read again."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._texts: dict[tuple[int, str], TokenTexts] = {}

    def get(self, session: Session, model: Model) -> TokenTexts:
        key = (model.id, model.source)
        if key not in self._texts:
            if len(self._texts) >= self.capacity:
                self._texts.pop(next(iter(self._texts)))
            self._texts[key] = TokenTexts.of(vocabulary(session, model.id))
        return self._texts[key]


def example_strip(
    texts: TokenTexts,
    token_ids: np.ndarray,
    activations: np.ndarray,
    scale: float,
    start: int,
    end: int,
    peak: int,
) -> Markup:
    """The strip of one stored example, token ids [start, end), shaded against `scale`."""
    window = np.asarray(activations[start:end], dtype=np.float64)
    intensities = np.clip(window / (scale if scale > 0 else 1.0), 0.0, 1.0).round(3).tolist()
    parts = ['<span class="tokens">']
    for offset, (token, value, intensity) in enumerate(
        zip(token_ids[start:end].tolist(), window.tolist(), intensities, strict=True)
    ):
        special = 0 <= token < len(texts.special) and texts.special[token]
        parts.append(
            f'<span class="{_classes(value, start + offset == peak, special)}" '
            f'style="--a:{intensity:g}" data-value="{value:.3f}">{texts.shown_at(token)}</span>'
        )
    parts.append("</span>")
    return Markup("".join(parts))
