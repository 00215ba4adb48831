"""The charts of an experiment's results, drawn with the shared helpers of `campaigns.charts`.

  effects_chart   the latest run: each variant's relative effect on the primary metric with its
                  interval (a confidence sequence when sequential, a credible interval when
                  Bayesian), against the "no effect" line; the winner highlighted;
  lift_chart      every run: each variant's cumulative lift over time with its interval band,
                  and a marker where the experiment concluded or stopped.
"""

from collections.abc import Sequence

from campaigns.charts import ChartSpec, Interval, Marker, Series, empty_chart_svg, interval_plot_svg, time_series_svg
from campaigns.metrics import get_metric

from .models import Experiment, ExperimentResult


def effects_chart(experiment: Experiment, result: ExperimentResult | None) -> str:
    title = f"Effect on {_metric_label(experiment)} vs the control (latest run)"
    if result is None:
        return empty_chart_svg(title, "No analysis yet.")
    winner_key = experiment.winner.key if experiment.winner_id else None
    rows = [
        Interval(label=row["name"], estimate=row["effect"], low=row["ci_low"], high=row["ci_high"],
                 highlight=row["key"] == winner_key)
        for row in result.variants if not row["is_control"]
    ]
    return interval_plot_svg(rows, title=title, x_label="Relative effect", percent=True)


def lift_chart(experiment: Experiment, results: Sequence[ExperimentResult]) -> str:
    title = f"Cumulative lift in {_metric_label(experiment)} over time"
    if not results:
        return empty_chart_svg(title, "No analysis yet.")
    series = []
    for key, name in _variant_names(results):
        points = [(r.computed_at, _row(r, key)) for r in results]
        series.append(Series(name, [at for at, _ in points], [row.get("effect") for _, row in points],
                             [row.get("ci_low") for _, row in points], [row.get("ci_high") for _, row in points]))
    markers = [Marker(experiment.ended_at, experiment.get_status_display())] if experiment.ended_at else []
    spec = ChartSpec(title=title, y_label="Lift vs control", series=series, markers=markers, reference=0.0,
                     percent=True)
    return time_series_svg(spec)


def _metric_label(experiment: Experiment) -> str:
    return get_metric(experiment.primary_metric).label.lower()


def _variant_names(results: Sequence[ExperimentResult]) -> list[tuple[str, str]]:
    names: dict[str, str] = {}
    for result in results:
        for row in result.variants:
            if not row["is_control"]:
                names.setdefault(row["key"], row["name"])
    return list(names.items())


def _row(result: ExperimentResult, key: str) -> dict:
    return next((row for row in result.variants if row["key"] == key), {})
