"""What an invocation tells the world while it runs.

Three listeners, none of which costs anything when nobody listens:

- the ``asyncflow`` logger, whose records carry the run id, workflow and step as ``extra``
  fields (``record.run_id``, ``record.workflow``, ``record.step``) for structured handlers;
- OpenTelemetry: spans for invocations, runs and side effects once the application has loaded
  ``opentelemetry`` (it must, to configure a tracer provider). asyncflow never imports it
  itself: a script without tracing pays nothing, not even the import;
- an :class:`Observer` a caller installs for the duration of a call (the command line's
  progress line and RUN SUMMARY), found through a context variable so that the public
  methods need no extra parameter.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from ._results import RunResult

    logger: logging.Logger  # the ``asyncflow`` logger, made by __getattr__ on first use

__all__ = ["OBSERVER", "Observer", "logger", "observer", "span"]


def __getattr__(name: str) -> logging.Logger:
    # `logger`, made when first used (the first run or log line): `import logging` (with
    # traceback, threading, string) would cost every `import asyncflow` some 5 ms.
    if name != "logger":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import logging

    globals()["logger"] = found = logging.getLogger("asyncflow")
    return found


class Observer:
    """Told what an invocation does, as it does it. The base class ignores everything."""

    def due(self, runs: int) -> None:
        """``runs`` more runs are about to be advanced (called again for each event round)."""

    def advanced(self, result: RunResult) -> None:
        """A run was advanced to its next stop."""

    def held_elsewhere(self, runs: int) -> None:
        """``runs`` due runs were skipped: another invocation holds them (or just moved them)."""

    def undefined(self, run_id: str, workflow: str) -> None:
        """A due run of a workflow this flow does not define was left as it is."""

    def delivered(self, event: str, runs: int) -> None:
        """Event ``event`` started or woke ``runs`` runs (0: nothing took it)."""


_IGNORE = Observer()
OBSERVER: contextvars.ContextVar[Observer] = contextvars.ContextVar(
    "asyncflow_observer", default=_IGNORE
)


def observer() -> Observer:
    """The observer of the current call (one that ignores everything if none was installed)."""
    return OBSERVER.get()


@contextmanager
def span(name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    """An OpenTelemetry span around the block, current inside it; ``None`` without tracing.

    An exception (not a pause or a cancellation, which are ``BaseException``) marks the span
    failed and is recorded on it.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        yield None
        return
    tracer = trace.get_tracer("asyncflow")
    with tracer.start_as_current_span(
        name,
        attributes={f"asyncflow.{k}": v for k, v in attributes.items() if v is not None},
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            current.record_exception(exc)
            current.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}"))
            raise


def set_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to a span from :func:`span` (``None``: no tracing, nothing to do)."""
    if current is not None:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"asyncflow.{key}", value)


def run_extra(run_id: str, workflow: str, step: str | None = None) -> dict[str, Any]:
    """The ``extra`` fields of a log record about a run."""
    return {"run_id": run_id, "workflow": workflow, "step": step}


class Tally(Observer):
    """Counts what one invocation did and passes everything on to the caller's observer."""

    def __init__(self, outer: Observer) -> None:
        self.outer = outer
        self.statuses: dict[str, int] = {}
        self.held = 0
        self.undefined_runs: dict[str, int] = {}

    def due(self, runs: int) -> None:
        self.outer.due(runs)

    def advanced(self, result: RunResult) -> None:
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        self.outer.advanced(result)

    def held_elsewhere(self, runs: int) -> None:
        self.held += runs
        self.outer.held_elsewhere(runs)

    def undefined(self, run_id: str, workflow: str) -> None:
        self.undefined_runs[workflow] = self.undefined_runs.get(workflow, 0) + 1
        self.outer.undefined(run_id, workflow)

    def delivered(self, event: str, runs: int) -> None:
        self.outer.delivered(event, runs)

    def describe(self, seconds: float) -> str:
        """One line for the log: what advanced, what was skipped, how long it took."""
        advanced = sum(self.statuses.values())
        text = f"invocation advanced {advanced} run{'' if advanced == 1 else 's'}"
        if self.statuses:
            text += " (" + ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) + ")"
        text += f" in {seconds:.3f} s"
        if self.held:
            text += f"; {self.held} held by another invocation, skipped"
        if self.undefined_runs:
            n = sum(self.undefined_runs.values())
            text += f"; {n} of workflows not defined here left as they are"
        return text


@contextmanager
def tally() -> Iterator[Tally]:
    """Install a :class:`Tally` over the current observer for the block."""
    counting = Tally(OBSERVER.get())
    token = OBSERVER.set(counting)
    try:
        yield counting
    finally:
        OBSERVER.reset(token)
