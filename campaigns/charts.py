"""Server-side charts as inline SVG strings (matplotlib, Agg backend): no JavaScript, no CDN.

Shared by the admin pages, dashboards and experiment results. Each helper takes plain data and
returns an `<svg>` element ready to embed in HTML (no XML prolog):

  time_series_svg(ChartSpec)      lines over time, each with an optional shaded interval
                                  (low/high), or stacked areas or bars; vertical markers (changes,
                                  decisions), an optional horizontal reference line and x range;
  interval_plot_svg(rows)         one horizontal interval per row with its estimate (effects
                                  of experiment arms, with a "no effect" line);
  empty_chart_svg(title)          the placeholder shown when there is nothing to chart.

Text stays text (`svg.fonttype = none`): the charts are small, searchable and scale with the
page, and labels pass through matplotlib's SVG writer, which escapes them as XML text. Element
ids are salted with a fixed value, so the same data gives the same SVG. Figures are built with
`matplotlib.figure.Figure`, never pyplot, so no global figure state is shared between requests.
"""

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (the backend is chosen before any figure exists)
from matplotlib.ticker import PercentFormatter  # noqa: E402

_RC = {"svg.fonttype": "none", "svg.hashsalt": "rulesplatform", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}
_SIZE = (7.0, 3.2)  # inches
_BAND_ALPHA = 0.18


@dataclass(frozen=True)
class Series:
    """A named line: y over x; `low` and `high`, when given, shade its interval."""

    label: str
    x: Sequence[Any]
    y: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None


@dataclass(frozen=True)
class Marker:
    """A vertical line at x with a short label (an applied change, a decision)."""

    x: Any
    label: str


@dataclass(frozen=True)
class ChartSpec:
    title: str
    y_label: str
    series: Sequence[Series]
    markers: Sequence[Marker] = ()
    stacked: bool = False  # stacked areas (shares of a total) instead of lines
    reference: float | None = None  # a horizontal line, e.g. 0 for "no effect"
    percent: bool = False  # y values are fractions, shown as %
    bars: bool = False  # with `stacked`: stacked bars (a total per step, e.g. spend per day) instead of areas
    x_limits: tuple[Any, Any] | None = None  # the period shown, so that charts of one page line up


@dataclass(frozen=True)
class Interval:
    """One row of an interval plot: an estimate with its low and high bounds (None = unknown)."""

    label: str
    estimate: float | None
    low: float | None
    high: float | None
    highlight: bool = False


@dataclass(frozen=True)
class _Axes:
    title: str
    y_label: str = ""
    x_label: str = ""
    percent_axis: str = ""  # "x" or "y": the axis whose values are fractions shown as %
    grid_axis: str = "y"
    legend: bool = False


def time_series_svg(spec: ChartSpec) -> str:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=_SIZE)
        axes = figure.add_subplot()
        if spec.stacked and spec.bars:
            _stacked_bars(axes, spec.series)
        elif spec.stacked:
            _stacked(axes, spec.series)
        else:
            _lines(axes, spec.series)
        for marker in spec.markers:
            axes.axvline(marker.x, color="0.45", linestyle=":", linewidth=1)
            axes.annotate(marker.label, (marker.x, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                          ha="right", fontsize=7, color="0.3")
        if spec.reference is not None:
            axes.axhline(spec.reference, color="0.3", linewidth=0.8)
        if spec.x_limits is not None:
            axes.set_xlim(*spec.x_limits)
        _finish(axes, _Axes(spec.title, y_label=spec.y_label, percent_axis="y" if spec.percent else "",
                            legend=len(spec.series) > 1))
        figure.autofmt_xdate()
        return _svg(figure)


def interval_plot_svg(rows: Sequence[Interval], *, title: str, x_label: str, reference: float | None = 0.0,
                      percent: bool = False) -> str:
    """One interval per row, first row on top; a row without numbers is listed with nothing drawn."""
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(_SIZE[0], 0.9 + 0.45 * max(1, len(rows))))
        axes = figure.add_subplot()
        positions = list(range(len(rows)))[::-1]
        for y, row in zip(positions, rows, strict=True):
            color = "C1" if row.highlight else "C0"
            if row.low is not None and row.high is not None:
                axes.hlines(y, row.low, row.high, color=color, linewidth=3, alpha=0.6)
            if row.estimate is not None:
                axes.plot([row.estimate], [y], "o", color=color)
        if reference is not None:
            axes.axvline(reference, color="0.3", linewidth=0.8, linestyle="--")
        axes.set_yticks(positions, [row.label for row in rows])
        axes.set_ylim(-0.7, max(1, len(rows)) - 0.3)
        _finish(axes, _Axes(title, x_label=x_label, percent_axis="x" if percent else "", grid_axis="x"))
        return _svg(figure)


def empty_chart_svg(title: str, message: str = "No data in this period.") -> str:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(_SIZE[0], 1.2))
        axes = figure.add_subplot()
        axes.set_axis_off()
        axes.text(0.5, 0.4, message, ha="center", va="center", color="0.4", transform=axes.transAxes)
        axes.set_title(title, loc="left", fontsize=10)
        return _svg(figure)


def _lines(axes, series: Sequence[Series]) -> None:
    for line in series:
        (drawn,) = axes.plot(line.x, _floats(line.y), marker="o", markersize=3, linewidth=1.5, label=line.label)
        if line.low is not None and line.high is not None:
            axes.fill_between(line.x, _floats(line.low), _floats(line.high), alpha=_BAND_ALPHA,
                              color=drawn.get_color(), linewidth=0)


def _stacked(axes, series: Sequence[Series]) -> None:
    if series:
        axes.stackplot(series[0].x, *(_floats(s.y) for s in series), labels=[s.label for s in series], alpha=0.85)


def _stacked_bars(axes, series: Sequence[Series]) -> None:
    """Each step's bar starts at its x and spans 90% of the step (days or hours, from the x spacing)."""
    if not series or not len(series[0].x):
        return
    x = list(series[0].x)
    width = (x[1] - x[0]) * 0.9 if len(x) > 1 else 0.9
    bottom = [0.0] * len(x)
    for item in series:
        heights = [0.0 if v != v else v for v in _floats(item.y)]  # NaN (no data) stacks as nothing
        axes.bar(x, heights, width=width, bottom=bottom, align="edge", label=item.label, alpha=0.85)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]


def _floats(values: Sequence[float | None]) -> list[float]:
    """None as NaN: a gap in the line rather than an error."""
    return [float("nan") if v is None else float(v) for v in values]


def _finish(axes, spec: _Axes) -> None:
    axes.set_title(spec.title, loc="left", fontsize=10)
    if spec.y_label:
        axes.set_ylabel(spec.y_label)
    if spec.x_label:
        axes.set_xlabel(spec.x_label)
    if spec.percent_axis:
        (axes.xaxis if spec.percent_axis == "x" else axes.yaxis).set_major_formatter(PercentFormatter(1.0))
    axes.grid(axis=spec.grid_axis, color="0.9")
    if spec.legend:
        axes.legend(loc="best", fontsize=8, frameon=False)


def _svg(figure: Figure) -> str:
    figure.tight_layout()
    buffer = io.StringIO()
    # No date in the metadata: the same data must give the same SVG.
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]
