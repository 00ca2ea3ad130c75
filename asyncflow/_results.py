"""What an invocation reports, and what inspection returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ._exceptions import DamagedRecordError
from ._record import RunRecord
from ._steps import view

__all__ = [
    "Run",
    "RunResult",
    "RunStatus",
    "Step",
    "damaged_result",
    "damaged_run",
    "run_result",
    "run_view",
]

#: ``"damaged"``: a stored record asyncflow cannot use (see :class:`DamagedRecordError`).
RunStatus = Literal["pending", "paused", "succeeded", "failed", "cancelled", "damaged"]


@dataclass(frozen=True)
class RunResult:
    """How one run ended in an invocation.

    Attributes:
        workflow: the workflow's name.
        run_id: the run's id.
        status: ``"succeeded"``, ``"failed"`` or ``"paused"``; ``"damaged"`` for a due run
            whose stored record cannot be used: it was skipped, left untouched, and ``error``
            says why and where (``workflow`` is ``"?"`` when the record does not say).
        logs: every line the run has logged so far, first to last.
        result: the workflow's return value (as stored: JSON round-tripped), once it succeeded.
        error: ``"TypeName: message"`` when the run failed, else ``None``.
        traceback: where the exception the run failed on was raised (bounded in size), when
            it failed on one.
        wake_at: for a paused run, the earliest time it may resume (epoch seconds), if any.
        wait_event: for a paused run, the event it waits for, if any. Both ``None`` for a
            paused run: it is due at the next invocation.
    """

    workflow: str
    run_id: str
    status: Literal["succeeded", "failed", "paused", "damaged"]
    logs: list[str] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    wake_at: float | None = None
    wait_event: str | None = None

    @classmethod
    def _of(cls, record: RunRecord) -> RunResult:
        return cls(
            workflow=record.workflow,
            run_id=record.run_id,
            status=record.status,  # type: ignore[arg-type]  # never "pending" once advanced
            logs=record.logs,
            result=record.result,
            error=record.error,
            traceback=record.traceback,
            wake_at=record.wake_at,
            wait_event=record.wait_event,
        )

    @classmethod
    def _damaged(cls, run_id: str, error: DamagedRecordError) -> RunResult:
        return cls(workflow="?", run_id=run_id, status="damaged", error=str(error))


@dataclass(frozen=True)
class Step:
    """One recorded step of a run's journal.

    Attributes:
        kind: ``"sideeffect"``, ``"log"``, ``"get_state"``, ``"set_state"``, ``"pause"``,
            ``"gather"``, ``"event"``, ``"wait_event"``, ``"sleep"``, ``"now"``, ``"random"``
            or ``"uuid"``.
        name: the side effect's, state's or event's name (``None`` for the others).
        value: the recorded value: what a side effect returned, a state value read or
            written, a log message, the number of branches gathered, an event's args
            (emitted or received), the time a sleep ends (epoch seconds), what
            ``now``/``random``/``uuid`` returned.
        error: for a side effect that raised, ``"TypeName: message"`` (while it waits to be
            retried: the error of its last attempt).
        done: ``False`` for a side effect that has started but not finished (it paused, or
            waits to be retried), a sleep or wait that has not ended.
        branch: which branch of :meth:`Context.gather` recorded it (``None``: the workflow
            itself), e.g. ``"3.1"``: branch 1 of the gather at the workflow's step 3 (counting
            from 0); ``"3.1/0.2"`` a branch within it; ``"5#2"`` the second attempt of the
            retried side effect at step 5.
        attempts: for a side effect with a ``retry`` policy, the attempts made (when it is
            done) or failed so far (while it waits to be retried).
        retry_at: when a side effect waiting to be retried will be, in seconds since the epoch.
        started_at: when the step was first reached (seconds since the epoch, the flow's
            clock); ``None`` in records written before asyncflow recorded it.
        ended_at: when it ended: a side effect's outcome, a sleep or wait that ended (the
            same as ``started_at`` for the steps that take no time; ``None`` while it has not
            ended, or in older records).
        deadline: when a sleep ends, a ``wait_event`` times out (``None``: no timeout), or
            a side effect waiting to be retried is retried, in seconds since the epoch.
    """

    kind: str
    name: str | None = None
    value: Any = None
    error: str | None = None
    done: bool = True
    branch: str | None = None
    attempts: int | None = None
    retry_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class Run:
    """A run as stored, for inspection (:meth:`Flow.get_run`, :meth:`Flow.list_runs`).

    A paused run says what it waits for: ``wake_at`` (epoch seconds) is the earliest time it
    may resume, ``wait_event`` the event it waits for; both ``None``: the next invocation.
    A failed run has its ``error`` and, if it failed on an exception, its ``traceback``.
    A ``"damaged"`` run is a stored record asyncflow cannot use: ``error`` says why and where,
    the other fields are empty (``workflow`` ``"?"``, times 0).
    """

    workflow: str
    run_id: str
    status: RunStatus
    trigger: str
    args: Any
    created_at: float
    updated_at: float
    logs: list[str]
    result: Any
    error: str | None
    steps: tuple[Step, ...]
    wake_at: float | None = None
    wait_event: str | None = None
    traceback: str | None = None

    @classmethod
    def _of(cls, record: RunRecord) -> Run:
        return cls(
            workflow=record.workflow,
            run_id=record.run_id,
            status=record.status,  # type: ignore[arg-type]  # checked when decoded
            trigger=record.trigger,
            args=record.args,
            created_at=record.created_at,
            updated_at=record.updated_at,
            logs=record.logs,
            result=record.result,
            error=record.error,
            steps=tuple(_step(s) for s in record.steps),
            wake_at=record.wake_at,
            wait_event=record.wait_event,
            traceback=record.traceback,
        )

    @classmethod
    def _damaged(cls, run_id: str, error: DamagedRecordError) -> Run:
        return cls(
            workflow="?",
            run_id=run_id,
            status="damaged",
            trigger="",
            args=None,
            created_at=0.0,
            updated_at=0.0,
            logs=[],
            result=None,
            error=str(error),
            steps=(),
        )


def _step(raw: dict[str, Any]) -> Step:
    return Step(**view(raw))


# The package makes the views through these (the classmethods are kept for the callers not
# moved yet; a module does not call another's private names).


def run_result(record: RunRecord) -> RunResult:
    """How the run ``record`` holds ended in an invocation."""
    return RunResult._of(record)


def damaged_result(run_id: str, error: DamagedRecordError) -> RunResult:
    """The result of a due run whose stored record cannot be used."""
    return RunResult._damaged(run_id, error)


def run_view(record: RunRecord) -> Run:
    """The run ``record`` holds, for inspection."""
    return Run._of(record)


def damaged_run(run_id: str, error: DamagedRecordError) -> Run:
    """A stored run whose record cannot be used, for inspection."""
    return Run._damaged(run_id, error)


# Public as asyncflow.Run, asyncflow.RunResult and asyncflow.Step, and shown so (in reprs,
# tracebacks, pickles, docs) as the package's other public names are. The package loads this
# module on first use, not at `import asyncflow`, so it cannot rename them itself in time.
for _cls in (Run, RunResult, Step):
    _cls.__module__ = "asyncflow"
del _cls
