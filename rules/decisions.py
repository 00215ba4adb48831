"""The per-segment decisions of one evaluation, kept column by column.

An evaluation decides for every segment in its rule's scope and keeps every number that drove
each decision: per trigger its settings, per window the value, baseline, sample sizes and the
kind's statistics, the statuses and the streak. A cycle holds ~370k such segments: building a
dict per segment and storing them as JSON cost more than evaluating the rules. So the numbers
stay in numpy columns, stored as a few arrays (`Evaluation.numbers`, float64: the exact
numbers), next to a small JSON (`Evaluation.inputs`: settings, counts, fired segments, and the
key to the arrays). The rows people read, reason sentences included, are made from the columns
only when read, and only for the segments read (`evaluation_segment_rows`), the same way for a
stored evaluation as for a dry run's, so both show the same.

Stored, the columns are compressed (format 2, see `SegmentDecisions.to_stored`): numbers that
follow exactly from others (a value from its numerator and denominator...) are left out and
recomputed when read, and the rest is compressed with zstd. At full scale that is ~15 MB a
cycle instead of ~70 MB raw, and compressing and writing them takes less time than writing
the raw bytes did (PostgreSQL stores them out of line as they come: STORAGE EXTERNAL, see
migration 0003). Evaluations stored before (format 1: the raw arrays; format 0: JSON rows) are
read as they were.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter

import numpy as np
import zstandard

from campaigns.metrics import get_metric

from .explain import STATUS_NAMES, trigger_reason
from .models import Evaluation, Trigger
from .triggers import INSUFFICIENT_REASONS, Status, TriggerResult, WindowResult, change_pct, ratio

Outcome = Evaluation.Outcome
OUTCOMES = (Outcome.FIRED, Outcome.NOT_FIRED, Outcome.INSUFFICIENT_DATA, Outcome.SKIPPED_STALE)  # code -> outcome
_OUTCOME_VALUES = tuple(outcome.value for outcome in OUTCOMES)
_IDS, _CODES, _FLOATS = np.dtype("<i8"), np.dtype("<i2"), np.dtype("<f8")
# Numbers before the kind's extras, in the order of the rows people read.
_WINDOW_NUMBERS = ("value", "numerator", "denominator", "baseline", "baseline_numerator", "baseline_denominator")
NUMBERS_FORMAT = 2  # see `SegmentDecisions.to_stored`
# Numbers recomputed when read, by the functions that computed them (in this order: a change needs
# its value and baseline). Each is left out of storage only where recomputing gives the same bits.
_DERIVED = {
    "value": lambda numbers, scale: ratio(numbers["numerator"], numbers["denominator"], scale),
    "baseline": lambda numbers, scale: ratio(numbers["baseline_numerator"], numbers["baseline_denominator"], scale),
    "change_pct": lambda numbers, scale: change_pct(numbers["value"], numbers["baseline"]),
}
# Fast over strong: level 1 already takes the numbers to ~a quarter (they are mostly counts and NaN).
_ZSTD_LEVEL = 1


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
    scale: float  # its metric's, as it was: values are `scale * numerator / denominator`
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

    def to_stored(self) -> tuple[dict, bytes]:
        """What an Evaluation keeps: its JSON `inputs` (counts, fired segments, the triggers'
        settings, their windows' bounds, columns and reasons' vocabularies, and under
        "numbers_format" the rest of the key to the bytes) and its `numbers`: the columns as
        little-endian arrays one after the other, ids (int64), small integers (int16: decision,
        stale reason, statuses, streaks, insufficient reasons), numbers (float64), then the names;
        zstd-compressed (b"" when no segment was in scope). The JSON tells the shapes, so no header.

        Each array's bytes are grouped by their place in the number (all first bytes, then all
        second bytes...), so the compressor finds the runs that neighbouring segments' exponents
        and whole counts share (at full scale 16.1 -> 14.6 MB, and faster); and the numbers of
        `_DERIVED` are left out where they recompute exactly (59 MB left of 70 before compression:
        the values are the least compressible numbers, as statistics are)."""
        derived = [[_derivable(w.numbers, t.scale) for w in t.windows] for t in self.triggers]
        inputs = {
            "decision_counts": self.counts(), "fired_segment_ids": self.fired_segment_ids(),
            "stale_reasons": self.stale_reasons,
            "triggers": [{**t.settings, "windows": [
                {"window_start": w.start, "window_end": w.end, "numbers": list(w.numbers),
                 "insufficient_reasons": w.reasons} for w in t.windows]} for t in self.triggers],
            "numbers_format": {"version": NUMBERS_FORMAT, "triggers": [
                {"scale": t.scale, "derived": d} for t, d in zip(self.triggers, derived, strict=True)]},
        }
        return inputs, self._compressed(derived)

    def _compressed(self, derived: list[list[list[str]]]) -> bytes:
        if not len(self):
            return b""
        codes = [self.codes, self.stale_codes]
        floats = []
        for trigger, left_out in zip(self.triggers, derived, strict=True):
            codes += [trigger.status, trigger.consecutive]
            for window, names in zip(trigger.windows, left_out, strict=True):
                codes += [window.status, window.reason_codes]
                floats += [values for name, values in window.numbers.items() if name not in names]
        n = len(self)
        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(b"".join([
            _byte_planes([self.segment_ids, self.campaign_ids], _IDS, n), _byte_planes(codes, _CODES, n),
            _byte_planes(floats, _FLOATS, n), "\0".join(self.names).encode()]))  # PostgreSQL text never holds NUL

    @classmethod
    def from_stored(cls, inputs: dict, numbers: bytes) -> "SegmentDecisions":
        """The decisions an evaluation kept: its JSON `inputs` and its `numbers` (see `to_stored`),
        in any format since the columns (1: raw arrays, no "numbers_format")."""
        if not numbers:
            return cls()
        n = sum(inputs["decision_counts"].values())
        stored_format = inputs.get("numbers_format") or _raw_arrays_format(inputs)
        derived = [t["derived"] for t in stored_format["triggers"]]
        windows = [(w, names) for t, d in zip(inputs["triggers"], derived, strict=True)
                   for w, names in zip(t["windows"], d, strict=True)]
        layout = [(_IDS, 2), (_CODES, 2 + 2 * len(inputs["triggers"]) + 2 * len(windows)),
                  (_FLOATS, sum(len(w["numbers"]) - len(names) for w, names in windows))]
        ids, codes, floats, names = _stored_columns(bytes(numbers), stored_format["version"], layout, n)
        decision, stale_codes = next(codes), next(codes)
        triggers = []
        for stored, stored_numbers in zip(inputs["triggers"], stored_format["triggers"], strict=True):
            settings = {key: value for key, value in stored.items() if key != "windows"}
            status, consecutive = next(codes), next(codes)
            windows = [
                WindowColumns(w["window_start"], w["window_end"],
                              _numbers_read(w["numbers"], left_out, floats, stored_numbers["scale"]),
                              next(codes), next(codes), w["insufficient_reasons"])
                for w, left_out in zip(stored["windows"], stored_numbers["derived"], strict=True)]
            triggers.append(TriggerColumns(settings, stored_numbers["scale"], windows, status, consecutive))
        return cls(ids[0], ids[1], names, stale_codes, inputs["stale_reasons"], decision, triggers)


@dataclass(frozen=True)
class ScopeSegments:
    """Who the segments of a scope are, as the columns of its evaluations: made once per scope
    and shared, read only, by the decisions of every rule of that scope."""

    segment_ids: np.ndarray
    campaign_ids: np.ndarray
    names: list[str]
    stale_codes: np.ndarray
    stale_reasons: list[str]


def scope_segments(segments: list[dict]) -> ScopeSegments:
    """The columns of `segments` as the scope lists them (id, name, campaign_id, stale)."""
    n = len(segments)
    stale_codes, stale_reasons = _encode(np.fromiter(map(itemgetter("stale"), segments), object, n))
    columns = [np.fromiter(map(itemgetter(key), segments), np.int64, n) for key in ("id", "campaign_id")]
    for array in (*columns, stale_codes):
        array.flags.writeable = False  # shared by every decision of the scope
    return ScopeSegments(*columns, [s["name"] for s in segments], stale_codes, stale_reasons)


def segment_decisions(segments: ScopeSegments, results: list[TriggerResult], codes: np.ndarray, *,
                      window_end: datetime) -> SegmentDecisions:
    """The columns of one evaluation: its scope's segments, the triggers' results, and the triggers'
    combined decision per segment (OUTCOMES codes), which stale data overrides."""
    return SegmentDecisions(
        segment_ids=segments.segment_ids, campaign_ids=segments.campaign_ids, names=segments.names,
        stale_codes=segments.stale_codes, stale_reasons=segments.stale_reasons,
        codes=np.where(segments.stale_codes > 0, OUTCOMES.index(Outcome.SKIPPED_STALE), codes).astype(np.int8),
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
    """The evaluation's inputs with its per-segment rows under "segments", as people and the API read them
    (without the key to the stored bytes, which says nothing about the decisions)."""
    inputs = {key: value for key, value in evaluation.inputs.items() if key != "numbers_format"}
    return {**inputs, "segments": evaluation_segment_rows(evaluation)}


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
    return TriggerColumns(settings, get_metric(trigger.metric).scale, windows,
                          np.asarray(result.status, dtype=np.int8), np.asarray(result.consecutive, dtype=np.int16))


@lru_cache(maxsize=256)  # the same few windows for all the rules of a cycle
def _window_bounds(window_end: datetime, minutes: int, k: int) -> tuple[str, str]:
    end = window_end - timedelta(minutes=k * minutes)
    return (end - timedelta(minutes=minutes)).isoformat(), end.isoformat()


def _window_columns(window: WindowResult, start: str, end: str) -> WindowColumns:
    columns = {name: getattr(window, name) for name in _WINDOW_NUMBERS} | window.extra
    numbers = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items() if values is not None}
    reason_codes, reasons = _renumbered(window.insufficient_reason, INSUFFICIENT_REASONS)
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


def _renumbered(codes: np.ndarray, vocabulary: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """What `_encode` makes of the strings that `codes` stand for (0: ""), without making the strings."""
    if not codes.any():  # the data sufficed everywhere
        return np.zeros(len(codes), np.int16), [""]
    used = np.flatnonzero(np.bincount(codes[codes > 0], minlength=len(vocabulary)))
    order = sorted(used.tolist(), key=lambda code: np.argmax(codes == code))  # by first appearance
    renumber = np.zeros(len(vocabulary), np.int16)
    renumber[order] = np.arange(1, len(order) + 1)
    return renumber[codes], ["", *(vocabulary[code] for code in order)]


def _number(value) -> float | None:
    return None if value is None else float(value)


# --- storing and reading the columns ---------------------------------------------------------


def _derivable(numbers: dict[str, np.ndarray], scale: float) -> list[str]:
    """The window's numbers of `_DERIVED` that recomputing from the others gives bit for bit."""
    return [name for name, derive in _DERIVED.items()
            if name in numbers and np.array_equal(derive(numbers, scale).view(np.int64), numbers[name].view(np.int64))]


def _byte_planes(columns: list[np.ndarray], dtype: np.dtype, n: int) -> bytes:
    """The columns as `dtype`, each one's bytes by place: its n first bytes, then its n second bytes..."""
    planes = np.empty((len(columns), dtype.itemsize, n), np.uint8)
    for plane, column in zip(planes, columns, strict=True):
        plane[...] = np.ascontiguousarray(column, dtype).view(np.uint8).reshape(n, dtype.itemsize).T
    return planes.tobytes()


def _stored_columns(numbers: bytes, version: int, layout: list[tuple[np.dtype, int]], n: int):
    """The ids, iterators over the codes and over the stored numbers, and the names, as `to_stored`
    keeps them (format 2), or as format 1 did: every array as it is, uncompressed."""
    data = zstandard.ZstdDecompressor().decompress(numbers) if version == NUMBERS_FORMAT else numbers
    offset, arrays = 0, []
    for dtype, rows in layout:
        if version == NUMBERS_FORMAT:
            planes = np.frombuffer(data, np.uint8, rows * n * dtype.itemsize, offset).reshape(rows, dtype.itemsize, n)
            arrays.append(np.ascontiguousarray(planes.transpose(0, 2, 1)).view(dtype).reshape(rows, n))
        else:
            arrays.append(np.frombuffer(data, dtype, rows * n, offset).reshape(rows, n))
        offset += rows * n * dtype.itemsize
    return arrays[0], iter(arrays[1]), iter(arrays[2]), data[offset:].decode().split("\0")


def _raw_arrays_format(inputs: dict) -> dict:
    """The "numbers_format" of format 1: every number stored (nothing to recompute with the scales)."""
    return {"version": 1, "triggers": [
        {"scale": get_metric(t["metric"]).scale, "derived": [[] for _ in t["windows"]]} for t in inputs["triggers"]]}


def _numbers_read(names: list[str], derived: list[str], stored, scale: float) -> dict[str, np.ndarray]:
    """A window's numbers in the order of `names`: the stored ones from `stored`, then `derived` recomputed."""
    numbers = {name: next(stored) for name in names if name not in derived}
    for name, derive in _DERIVED.items():
        if name in derived:
            numbers[name] = derive(numbers, scale)
    return {name: numbers[name] for name in names}


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
