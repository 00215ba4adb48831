"""A one-line progress display on stderr (rewritten in place on a terminal, a line per step elsewhere)."""

import sys
import time

LOG_EVERY_SECONDS = 5.0  # off a terminal, where each update is a new line


class Progress:
    def __init__(self, stream=None, *, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._interactive = self.stream.isatty()
        self._label, self._unit, self._total, self._done, self._started = "", "", 0, 0, 0.0
        self._logged = 0.0

    def note(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def start(self, label: str, *, total: int, unit: str) -> None:
        self._label, self._unit, self._total, self._done = label, unit, total, 0
        self._started = time.perf_counter()
        self._logged = 0.0
        self._show()

    def advance(self, amount: int = 1) -> None:
        self._done += amount
        self._show()

    def finish(self) -> None:
        if self.enabled and self._interactive:
            print(file=self.stream, flush=True)

    def _show(self) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        share = self._done / self._total if self._total else 1.0
        line = (f"{self._label}: {self._done:,}/{self._total:,} {self._unit} ({share:.0%}), "
                f"{rate:,.0f} {self._unit}/s, {elapsed:.1f} s")
        if self._interactive:
            print(f"\r{line}", end="", file=self.stream, flush=True)
        elif self._done >= self._total or elapsed - self._logged >= LOG_EVERY_SECONDS:
            self._logged = elapsed
            print(line, file=self.stream, flush=True)
