"""The command line's progress line: runs done out of runs due, failures, elapsed time.

Shown on a terminal only (stderr, when it is a TTY), rewritten in place at most ten times a
second and erased before the RUN SUMMARY; pipes, files and ``--json`` never see it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

from ._summary import Summary, local_time
from ._telemetry import Observer

if TYPE_CHECKING:
    from ._results import RunResult

__all__ = ["Progress"]

_INTERVAL = 0.1  # seconds between redraws: fast enough to look live, cheap for 10,000 runs


class Progress(Observer):
    """Collects an invocation's :class:`Summary` and, on a terminal, draws its progress."""

    def __init__(self, summary: Summary, out: TextIO | None, lang: str = "en") -> None:
        self.summary = summary
        self.out = out  # None: not a terminal, draw nothing
        self.lang = lang
        self.started = time.monotonic()
        self.due_runs = 0
        self.done = 0
        self.failed = 0
        self.drawn_at = 0.0
        self.shown = False
        self.delivered_to: int | None = None  # runs the event an emit sent started or woke

    def delivered(self, event: str, runs: int) -> None:
        self.delivered_to = runs

    def due(self, runs: int) -> None:
        self.due_runs += runs
        self.draw()

    def advanced(self, result: RunResult) -> None:
        self.summary.in_flight[result.run_id] = result
        self.done += 1
        self.failed += result.status == "failed"
        self.draw()

    def held_elsewhere(self, runs: int) -> None:
        self.summary.held += runs

    def undefined(self, run_id: str, workflow: str) -> None:
        self.summary.undefined[workflow] = self.summary.undefined.get(workflow, 0) + 1

    def asleep(self, until: float) -> None:
        """The worker sleeps until ``until`` (epoch seconds) for its next invocation."""
        self.draw(force=True, until=until)

    def draw(self, *, force: bool = False, until: float | None = None) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if not force and now - self.drawn_at < _INTERVAL:
            return
        self.drawn_at = now
        elapsed = now - self.started
        if self.lang == "ja":
            text = f"{self.done}/{self.due_runs}件 完了  失敗 {self.failed}件  {elapsed:.1f}秒"
        else:
            text = f"{self.done}/{self.due_runs} runs done, {self.failed} failed, {elapsed:.1f} s"
        if until is not None:
            when = local_time(until)
            text += f"  次回の実行 {when}" if self.lang == "ja" else f"; next invocation at {when}"
        # \r and "erase to end of line": the line is rewritten where it is.
        self.out.write(f"\r\x1b[K{text}")
        self.out.flush()
        self.shown = True

    def erase(self) -> None:
        """Remove the line, so that what is printed next starts on a clean line."""
        if self.out is not None and self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False
