"""Chart geometry and the small formatters pages rely on."""

import math

import numpy as np
import pytest

from app.web.charts import bar_chart, decade_label, log_ticks, trimmed
from app.web.markup import display_token, token_cells, token_strip
from app.web.views import format_density, format_number


def test_bars_fill_the_plot_in_proportion_to_their_counts():
    chart = bar_chart([0, 5, 10, 2], [0, 1, 2, 3, 4], title="t", x_label="x")
    left, top, right, bottom = chart.plot
    assert len(chart.bars) == 3  # empty bins draw nothing
    heights = [b.height for b in chart.bars]
    assert heights[1] == pytest.approx(2 * heights[0])
    assert all(left <= b.x and b.x + b.width <= right for b in chart.bars)
    assert all(top <= b.y and b.y + b.height == pytest.approx(bottom) for b in chart.bars)
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    assert chart.bars[0].title == "1 to 2: 5"


def test_an_empty_histogram_is_marked_empty():
    assert bar_chart([0, 0], [0, 1, 2], title="t", x_label="x").empty


def test_log_axes_get_readable_ticks():
    assert decade_label(-2) == "0.01" and decade_label(-6) == "1e-6" and decade_label(0) == "1"
    one_two_five = [k + math.log10(m) for k in (-2, -1) for m in (1, 2, 5)]
    assert log_ticks(-2.2, 0.1) == pytest.approx([*one_two_five, 0])
    assert log_ticks(-6, 0) == [-6, -5, -4, -3, -2, -1, 0]


def test_trimming_keeps_the_filled_span_and_a_margin():
    counts, edges = trimmed([0, 0, 3, 0, 4, 0, 0], list(range(8)))
    assert counts == [0, 3, 0, 4, 0] and edges == [1, 2, 3, 4, 5, 6]


def test_token_cells_shade_against_the_scale_and_mark_the_peak():
    cells = token_cells(["<|endoftext|>", "a", "\n", ""], np.array([0, 2.0, 4.0, 0]), scale=8.0)
    assert [c.intensity for c in cells] == [0, 0.25, 0.5, 0]
    assert [c.peak for c in cells] == [False, False, True, False]
    assert cells[0].special and cells[2].text == "↵" and cells[3].text == "∅"


def test_formatters_read_well():
    assert format_density(0) == "dead" and format_density(0.0123) == "1.2%"
    assert format_density(0.000123) == "0.012%" and format_density(1.2e-6) == "1.2e-04%"
    assert format_number(None) == "–" and format_number(float("nan")) == "–"
    assert format_number(0.123456) == "0.123" and display_token("\tx") == "⇥x"


def test_token_strips_escape_text_inside_and_outside_attributes():
    hostile = ['"><img src=x onerror=alert(1)>', "<script>alert(1)</script>", "a&b"]
    html = str(token_strip(token_cells(hostile, np.array([1.0, 2.0, 0.0]), scale=2.0)))
    assert "<img" not in html and "<script>" not in html and "alert(1)>" not in html
    assert html.count("&lt;script&gt;") == 1
    assert 'class="tok peak on"' in html and "a&amp;b" in html
