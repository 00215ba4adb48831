"""The per-segment decisions of one evaluation, kept column by column.

An evaluation decides for every segment in its rule's scope and keeps every number that drove
each decision: per trigger its settings, per window the value, baseline, sample sizes and the
kind's statistics, the statuses and the streak. A cycle holds ~370k such segments: building a
dict per segment and storing them as JSON cost more than evaluating the rules. So the numbers
stay in numpy columns, stored as a few raw arrays (`Evaluation.numbers`, float64: the exact
numbers), next to a small JSON (`Evaluation.inputs`: settings, counts, fired segments, and the
key to the arrays). The rows people read, reason sentences included, are made from the columns
only when read, and only for the segments read (`evaluation_segment_rows`), the same way for a
stored evaluation as for a dry run's, so both show the same.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

from campaigns.metrics import get_metric

from .explain import STATUS_NAMES, trigger_reason
from .models import Evaluation, Trigger
from .triggers import Status, TriggerResult, WindowResult

Outcome = Evaluation.Outcome
OUTCOMES = (Outcome.FIRED, Outcome.NOT_FIRED, Outcome.INSUFFICIENT_DATA, Outcome.SKIPPED_STALE)  # code -> outcome
_OUTCOME_VALUES = tuple(outcome.value for outcome in OUTCOMES)
_IDS, _CODES, _FLOATS = np.dtype("<i8"), np.dtype("<i2"), np.dtype("<f8")
# Numbers before the kind's extras, in the order of the rows people read.
_WINDOW_NUMBERS = ("value", "numerator", "denominator", "baseline", "baseline_numerator", "baseline_denominator")


@dataclass
class WindowColumns:
    """One window of one trigger, every array of shape (segments,)."""

    start: str
    end: str
    numbers: dict[str, np.ndarray]  # float64, NaN where undefined
    status: np.ndarray  # Status codes
    reason_codes: np.ndarray  # index into `reasons`
    reasons: list[str]  # why data was insufficient; "" (code 0) when it was not


@dataclass
class TriggerColumns:
    settings: dict  # JSON: the trigger as it was evaluated
    windows: list[WindowColumns]  # [0] is the current window
    status: np.ndarray  # combined over the windows
    consecutive: np.ndarray


@dataclass
class SegmentDecisions:
    """Per segment in scope (in scope order): who it is, what was decided, and every number behind it."""

    segment_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    campaign_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    names: list[str] = field(default_factory=list)
    stale_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # index into `stale_reasons`
    stale_reasons: list[str] = field(default_factory=lambda: [""])  # why skipped; "" (code 0) when fresh
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # index into OUTCOMES
    triggers: list[TriggerColumns] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.segment_ids)

    def counts(self) -> dict[str, int]:
        """Segments per decision, every outcome listed (0 when none)."""
        per_code = np.bincount(self.codes, minlength=len(OUTCOMES)).tolist()
        return dict(zip(_OUTCOME_VALUES, per_code, strict=True))

    def fired_segment_ids(self) -> list[int]:
        return self.segment_ids[self.codes == OUTCOMES.index(Outcome.FIRED)].tolist()

    def fired_names(self) -> list[str]:
        return [self.names[i] for i in np.flatnonzero(self.codes == OUTCOMES.index(Outcome.FIRED)).tolist()]

    def rows(self, segment_ids=None) -> list[dict]:
        """One JSON-safe dict per segment (all, or those of `segment_ids`, in scope order)."""
        index = np.arange(len(self)) if segment_ids is None else np.flatnonzero(
            np.isin(self.segment_ids, list(segment_ids)))
        triggers = [_trigger_rows(t, index) for t in self.triggers]
        rows = []
        for n, i in enumerate(index.tolist()):
            trigger_rows = [t[n] for t in triggers]
            rows.append({
                "segment_id": int(self.segment_ids[i]), "segment_name": self.names[i],
                "campaign_id": int(self.campaign_ids[i]), "decision": str(OUTCOMES[self.codes[i]]),
                "reason": self.stale_reasons[self.stale_codes[i]] or "; ".join(r["reason"] for r in trigger_rows),
                "triggers": trigger_rows,
            })
        return rows

    def inputs(self) -> dict:
        """What the evaluation's JSON keeps: counts, fired segments, and the key to `to_bytes`' rows
        (the triggers' settings, their windows' bounds and columns, the reasons' vocabularies)."""
        return {
            "decision_counts": self.counts(), "fired_segment_ids": self.fired_segment_ids(),
            "stale_reasons": self.stale_reasons,
            "triggers": [{**t.settings, "windows": [
                {"window_start": w.start, "window_end": w.end, "numbers": list(w.numbers),
                 "insufficient_reasons": w.reasons} for w in t.windows]} for t in self.triggers],
        }

    def to_bytes(self) -> bytes:
        """The columns as raw little-endian arrays, one after the other (b"" when no segment was in
        scope): ids (int64), small integers (int16: decision, stale reason, statuses, streaks,
        insufficient reasons), numbers (float64), then the names. The JSON `inputs()` tells their
        shapes, so no header: at ~1,000 evaluations a cycle, even .npy headers cost ~0.2 s. Not
        compressed: zlib saves ~40% of float data at ~20 MB/s, slower than the rest of a cycle."""
        if not len(self):
            return b""
        codes = [self.codes, self.stale_codes]
        floats = []
        for trigger in self.triggers:
            codes += [trigger.status, trigger.consecutive]
            for window in trigger.windows:
                codes += [window.status, window.reason_codes]
                floats += window.numbers.values()
        return b"".join([np.stack([self.segment_ids, self.campaign_ids]).astype(_IDS).tobytes(),
                         np.stack(codes).astype(_CODES).tobytes(), np.stack(floats).astype(_FLOATS).tobytes(),
                         "\0".join(self.names).encode()])  # PostgreSQL text never holds NUL

    @classmethod
    def from_stored(cls, inputs: dict, numbers: bytes) -> "SegmentDecisions":
        """The decisions an evaluation kept: its JSON `inputs` and its `numbers` (see `to_bytes`)."""
        if not numbers:
            return cls()
        data, n = bytes(numbers), sum(inputs["decision_counts"].values())
        windows = [w for t in inputs["triggers"] for w in t["windows"]]
        layout = [(_IDS, 2), (_CODES, 2 + 2 * len(inputs["triggers"]) + 2 * len(windows)),
                  (_FLOATS, sum(len(w["numbers"]) for w in windows))]
        offset, arrays = 0, []
        for dtype, rows in layout:
            arrays.append(np.frombuffer(data, dtype, rows * n, offset).reshape(rows, n))
            offset += rows * n * dtype.itemsize
        ids, codes, floats = arrays[0], iter(arrays[1]), iter(arrays[2])
        decision, stale_codes = next(codes), next(codes)
        triggers = []
        for stored in inputs["triggers"]:
            settings = {key: value for key, value in stored.items() if key != "windows"}
            status, consecutive = next(codes), next(codes)
            windows = [WindowColumns(w["window_start"], w["window_end"], {name: next(floats) for name in w["numbers"]},
                                     next(codes), next(codes), w["insufficient_reasons"]) for w in stored["windows"]]
            triggers.append(TriggerColumns(settings, windows, status, consecutive))
        return cls(ids[0], ids[1], data[offset:].decode().split("\0"), stale_codes, inputs["stale_reasons"],
                   decision, triggers)


def segment_decisions(segments: list[dict], results: list[TriggerResult], codes: np.ndarray, *,
                      window_end: datetime) -> SegmentDecisions:
    """The columns of one evaluation: `segments` as the scope lists them (id, name, campaign_id,
    stale), the triggers' results, and the triggers' combined decision per segment (OUTCOMES codes),
    which stale data overrides."""
    stale_codes, stale_reasons = _encode(np.array([s["stale"] for s in segments], dtype=object))
    return SegmentDecisions(
        segment_ids=np.array([s["id"] for s in segments], dtype=np.int64),
        campaign_ids=np.array([s["campaign_id"] for s in segments], dtype=np.int64),
        names=[s["name"] for s in segments], stale_codes=stale_codes, stale_reasons=stale_reasons,
        codes=np.where(stale_codes > 0, OUTCOMES.index(Outcome.SKIPPED_STALE), codes).astype(np.int8),
        triggers=[_trigger_columns(r, window_end) for r in results],
    )


def evaluation_segment_rows(evaluation: Evaluation, segment_ids=None) -> list[dict]:
    """Per segment (all, or those of `segment_ids`): decision, reason, and per trigger every number behind it."""
    if "segments" in evaluation.inputs:  # recorded before the numbers were kept in columns
        rows = evaluation.inputs["segments"]
        wanted = None if segment_ids is None else set(segment_ids)
        return rows if wanted is None else [r for r in rows if r.get("segment_id") in wanted]
    return SegmentDecisions.from_stored(evaluation.inputs, evaluation.numbers).rows(segment_ids)


def evaluation_inputs(evaluation: Evaluation) -> dict:
    """The evaluation's inputs with its per-segment rows under "segments", as people and the API read them."""
    return {**evaluation.inputs, "segments": evaluation_segment_rows(evaluation)}


# --- building the columns --------------------------------------------------------------------


def _trigger_columns(result: TriggerResult, window_end: datetime) -> TriggerColumns:
    trigger = result.trigger
    settings = {
        "trigger_id": trigger.pk, "position": trigger.position, "metric": trigger.metric, "kind": trigger.kind,
        "direction": trigger.direction, "threshold": _number(trigger.threshold),
        "confidence": _number(trigger.confidence), "k_sigma": _number(trigger.k_sigma),
        "min_sample": trigger.min_sample, "window_minutes": trigger.window_minutes,
        "baseline_minutes": trigger.baseline_minutes, "consecutive_required": trigger.consecutive_windows,
    }
    windows = [_window_columns(w, *_window_bounds(window_end, trigger.window_minutes, k))
               for k, w in enumerate(result.windows)]
    return TriggerColumns(settings, windows, np.asarray(result.status, dtype=np.int8),
                          np.asarray(result.consecutive, dtype=np.int16))


def _window_bounds(window_end: datetime, minutes: int, k: int) -> tuple[str, str]:
    end = window_end - timedelta(minutes=k * minutes)
    return (end - timedelta(minutes=minutes)).isoformat(), end.isoformat()


def _window_columns(window: WindowResult, start: str, end: str) -> WindowColumns:
    columns = {name: getattr(window, name) for name in _WINDOW_NUMBERS} | window.extra
    numbers = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items() if values is not None}
    reason_codes, reasons = _encode(window.insufficient_reason)
    return WindowColumns(start, end, numbers, np.asarray(window.status, dtype=np.int8), reason_codes, reasons)


def _encode(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes and vocabulary of a column of strings, mostly "" (code 0): only the others are looked up."""
    codes = np.zeros(len(values), dtype=np.int16)
    given = np.flatnonzero(values != "")
    strings = values[given].tolist()
    vocabulary = ["", *dict.fromkeys(strings)]
    lookup = {value: code for code, value in enumerate(vocabulary)}
    codes[given] = np.fromiter(map(lookup.__getitem__, strings), np.int16, len(strings))
    return codes, vocabulary


def _number(value) -> float | None:
    return None if value is None else float(value)


# --- rows, for the segments read -------------------------------------------------------------


def _trigger_rows(columns: TriggerColumns, index: np.ndarray) -> list[dict]:
    """Per segment of `index`: the trigger's settings, its current window's numbers, and its verdict."""
    trigger = _trigger(columns.settings)
    metric = get_metric(trigger.metric)
    windows = [_window_rows(w, index) for w in columns.windows]
    statuses, consecutive = columns.status[index].tolist(), columns.consecutive[index].tolist()
    rows = []
    for n in range(len(index)):
        segment_windows = [rows_of_window[n] for rows_of_window in windows]
        row = {**columns.settings, **segment_windows[0], "status": STATUS_NAMES[Status(statuses[n])],
               "passed": statuses[n] == Status.PASSED, "consecutive_count": consecutive[n],
               "reason": trigger_reason(trigger, metric, segment_windows, consecutive[n])}
        if len(segment_windows) > 1:
            row["earlier_windows"] = segment_windows[1:]
        rows.append(row)
    return rows


def _trigger(settings: dict) -> Trigger:
    """The trigger as it was evaluated (it may have been edited or deleted since), for the reason sentences."""
    def decimal(value):
        return None if value is None else Decimal(repr(value))

    return Trigger(metric=settings["metric"], kind=settings["kind"], direction=settings["direction"],
                   threshold=decimal(settings["threshold"]), confidence=decimal(settings["confidence"]),
                   k_sigma=decimal(settings["k_sigma"]), min_sample=settings["min_sample"],
                   window_minutes=settings["window_minutes"], baseline_minutes=settings["baseline_minutes"],
                   consecutive_windows=settings["consecutive_required"])


def _window_rows(window: WindowColumns, index: np.ndarray) -> list[dict]:
    columns = {name: _json_numbers(values[index]) for name, values in window.numbers.items()}
    statuses = [STATUS_NAMES[Status(s)] for s in window.status[index].tolist()]
    reasons = [window.reasons[c] for c in window.reason_codes[index].tolist()]
    return [
        {"window_start": window.start, "window_end": window.end, **{name: col[n] for name, col in columns.items()},
         "status": statuses[n], "insufficient_reason": reasons[n]}
        for n in range(len(statuses))
    ]


def _json_numbers(values: np.ndarray) -> list[float | None]:
    """Plain floats for JSON: NaN and infinities (undefined statistics, open intervals) become None."""
    return np.where(np.isfinite(values), values, None).tolist()
