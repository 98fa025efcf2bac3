"""Chart geometry for inline SVG: Python lays out bars and ticks, a Jinja macro draws them.

    chart = bar_chart(counts, edges, x_label="log10 activation")
    {{ charts.bars(chart) }}

Keeping the markup in a template means every label passes through autoescaping, and pages need
no chart library or CDN.
"""

import math
from dataclasses import dataclass, field

from app.db.labels import SCORE_EDGES


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # hover text


@dataclass(frozen=True)
class Tick:
    at: float  # pixel position along its axis
    label: str
    highlighted: bool = False  # a mark drawn in the accent colour, its label set lower


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot: tuple[float, float, float, float]  # left, top, right, bottom in pixels
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    x_label: str
    y_label: str
    title: str
    marks: list[Tick] = field(default_factory=list)  # vertical reference lines
    empty: bool = False


def _nice_step(peak: float, target_ticks: int = 4) -> float:
    """A round tick step (1, 2 or 5 × 10^k) giving about target_ticks ticks up to peak."""
    raw = peak / max(target_ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for multiple in (1, 2, 5, 10):
        if raw <= multiple * magnitude:
            return multiple * magnitude
    return 10 * magnitude


def _count_label(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def bar_chart(
    counts: list[int],
    edges: list[float],
    *,
    title: str,
    x_label: str,
    y_label: str = "count",
    x_tick_format=lambda v: f"{v:g}",
    x_ticks_at: list[float] | None = None,
    marks: dict[str, float] | None = None,
    highlighted: tuple[str, ...] = (),
    width: int = 560,
    height: int = 180,
) -> BarChart:
    """A histogram: len(edges) == len(counts) + 1, bars drawn between consecutive edges. `marks`
    are vertical lines at values (clamped into the axis), those named in `highlighted` drawn
    apart from the rest."""
    left, top, right, bottom = 48.0, 10.0, width - 12.0, height - 36.0
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    peak = max(counts) if counts else 0

    def x_of(value: float) -> float:
        return left + (value - lo) / span * (right - left)

    step = _nice_step(peak) if peak else 1
    y_top = max(step * math.ceil(peak / step), step)

    def y_of(value: float) -> float:
        return bottom - value / y_top * (bottom - top)

    bars = [
        Bar(
            x=round(x_of(a), 2),
            y=round(y_of(c), 2),
            width=round(max(x_of(b) - x_of(a) - 1, 1), 2),
            height=round(bottom - y_of(c), 2),
            title=f"{x_tick_format(a)} to {x_tick_format(b)}: {c:,}",
        )
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
        if c > 0
    ]
    ticks_at = x_ticks_at if x_ticks_at is not None else _default_ticks(lo, hi)
    x_ticks = [Tick(round(x_of(v), 2), x_tick_format(v)) for v in ticks_at if lo <= v <= hi]
    y_ticks = [
        Tick(round(y_of(v), 2), _count_label(v))
        for v in (step * i for i in range(round(y_top / step) + 1))
    ]
    mark_ticks = [
        Tick(round(x_of(min(max(v, lo), hi)), 2), name, name in highlighted)
        for name, v in (marks or {}).items()
    ]
    return BarChart(
        width,
        height,
        (left, top, right, bottom),
        bars,
        x_ticks,
        y_ticks,
        x_label,
        y_label,
        title,
        mark_ticks,
        empty=peak == 0,
    )


def _default_ticks(lo: float, hi: float) -> list[float]:
    step = _nice_step(hi - lo, 5)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def decade_label(log10_value: float) -> str:
    """1e-3 style labels for a log10 axis; whole decades read as 0.001, 0.01, ..."""
    value = 10**log10_value
    whole = abs(log10_value - round(log10_value)) < 1e-9
    if whole and -3 <= log10_value <= 3:
        return f"{value:g}"
    if whole:
        return f"1e{round(log10_value)}"
    if -3 <= log10_value <= 3:
        return f"{value:.2g}"
    return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick positions on a log10 axis: decades, or 1-2-5 steps when the span is short."""
    multiples = (1, 2, 5) if hi - lo < 2.5 else (1,)
    return [
        math.log10(m) + k
        for k in range(math.floor(lo), math.ceil(hi) + 1)
        for m in multiples
        if lo <= math.log10(m) + k <= hi
    ]


def trimmed(
    counts: list[int], edges: list[float], margin: int = 1
) -> tuple[list[int], list[float]]:
    """The span of bins that hold data, plus a margin: fixed-range histograms are mostly empty."""
    filled = [i for i, c in enumerate(counts) if c]
    if not filled:
        return counts, edges
    lo, hi = max(filled[0] - margin, 0), min(filled[-1] + margin + 1, len(counts))
    return counts[lo:hi], edges[lo : hi + 1]


def density_chart(summary: dict):
    histogram = summary.get("density_log10")
    if not histogram:
        return None
    return bar_chart(
        histogram["counts"],
        histogram["edges"],
        title="Feature density (alive features)",
        x_label="fraction of tokens a feature fires on (log scale)",
        y_label="features",
        x_tick_format=decade_label,
        x_ticks_at=list(range(-8, 1)),
    )


def score_chart(summary: dict):
    histogram = summary.get("scores")
    if not histogram or not summary.get("scored"):
        return None
    return bar_chart(
        histogram["counts"],
        SCORE_EDGES,
        title="Headline label scores",
        x_label="score (detection or fuzzing accuracy, else keyword-match correlation)",
        y_label="features",
    )
