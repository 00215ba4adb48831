"""Shared SVG charts: inline-ready, deterministic, text escaped, gaps for missing values."""

from datetime import UTC, datetime, timedelta

from campaigns.charts import (
    ChartSpec,
    Interval,
    Marker,
    Series,
    empty_chart_svg,
    interval_plot_svg,
    time_series_svg,
)

HOURS = [datetime(2026, 3, 2, tzinfo=UTC) + timedelta(hours=i) for i in range(6)]


def _spec(**fields) -> ChartSpec:
    series = [Series("CPA <b>&</b>", HOURS, [10, 11, None, 12, 11, 10], [8] * 6, [13] * 6)]
    return ChartSpec(**{"title": "CPA", "y_label": "EUR", "series": series,
                        "markers": [Marker(HOURS[3], "bid -10%")], **fields})


def test_time_series_svg__is_an_inline_svg_element_with_its_text():
    svg = time_series_svg(_spec())

    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg
    assert "bid -10%" in svg and "EUR" in svg  # text stays text


def test_time_series_svg__escapes_labels():
    svg = time_series_svg(_spec(title="<script>alert(1)</script>", series=[Series("<b>", HOURS, [1] * 6)]))

    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_time_series_svg__same_data__same_svg():
    assert time_series_svg(_spec()) == time_series_svg(_spec())


def test_time_series_svg__stacked_and_percent_variants_render():
    stacked = time_series_svg(ChartSpec("Spend", "EUR", [Series("A", HOURS, [1] * 6), Series("B", HOURS, [2] * 6)],
                                        stacked=True))
    percent = time_series_svg(ChartSpec("Lift", "", [Series("B", HOURS, [0.01] * 6)], reference=0.0, percent=True))

    assert "A" in stacked and "B" in stacked
    assert "%" in percent


def test_interval_plot_svg__lists_every_row_even_without_numbers():
    svg = interval_plot_svg([Interval("Variant B", 0.05, 0.01, 0.09, highlight=True),
                             Interval("Variant C", None, None, None)], title="Effects", x_label="Lift",
                            percent=True)

    assert "Variant B" in svg and "Variant C" in svg and "Lift" in svg


def test_empty_chart_svg__says_why():
    svg = empty_chart_svg("Spend", "No analysis yet.")

    assert svg.startswith("<svg") and "No analysis yet." in svg
