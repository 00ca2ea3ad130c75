"""The replay cursor of one context (the workflow's, a branch's, a retried attempt's): where
it is in its steps of the run's journal, whether it is suspended; how steps are replayed,
recorded, replaced, and how the context suspends or stops the run."""

from __future__ import annotations

from typing import Any, NoReturn

from ._exceptions import AsyncflowError, NonDeterminismError, UsageError
from ._journal import Journal, RunEngine
from ._record import dumps
from ._steps import call, child_path, marked, stamp, with_branch

__all__ = ["Cursor", "Suspend"]


class Suspend(BaseException):
    """Unwinds a workflow that paused.

    A ``BaseException``, like cancellation, so that ``except Exception:`` in user code cannot
    swallow a pause.
    """


class Cursor:
    """One context's position in the run's journal.

    Attributes:
        journal: what the run's contexts share.
        engine: the engine executing the run (the journal's).
        path: the context's branch path ("" for the workflow's; see :mod:`asyncflow._steps`).
        pos: the position (in this context's steps) of the next step to replay or record.
        suspended: the context paused; the run suspends once it unwinds.
    """

    __slots__ = (
        "_current_task",
        "_own",
        "_task",
        "engine",
        "journal",
        "path",
        "pos",
        "record",
        "suspended",
    )

    def __init__(self, journal: Journal, path: str = "") -> None:
        self.journal = journal
        self.engine: RunEngine = journal.engine
        self.record = journal.record
        self.path = path
        self._own = journal.index.setdefault(path, [])  # journal indices of this context's steps
        self.pos = 0
        self.suspended = False
        # Steps are identified by their position in their context, so they must come one at a
        # time from the task that runs the context (side effects nest by being awaited, in
        # that same task; concurrency needs a context per branch: gather, map).
        self._current_task = journal.current_task
        self._task = self._current_task()

    def child(self, label: str) -> Cursor:
        """The cursor of a child context (a branch, a retried attempt), with steps of its own.

        Its path names where it was made (``label`` holds this context's step position), so
        it is the same on every replay, whatever order concurrent branches ran in.
        """
        return Cursor(self.journal, child_path(self.path, label))

    def where(self, pos: int) -> str:
        """Step ``pos`` of this context, as errors name it."""
        return f"step {pos + 1}" + (f" of branch {self.path}" if self.path else "")

    # -- stopping ------------------------------------------------------------------------------

    def fail(self, error: AsyncflowError) -> AsyncflowError:
        """Stop the whole run with ``error`` (not the workflow's to handle); return it, to
        raise."""
        self.journal.fatal = error
        return error

    def check_live(self) -> None:
        """Raise what stops this context: the run's fatal error, or its pause."""
        fatal = self.journal.fatal
        if fatal is not None:
            raise fatal
        if self.suspended:
            raise Suspend

    def suspend(self, until: float | None, *, waiting: bool = False) -> NoReturn:
        """Suspend this context (and, once it unwinds, the run) until ``until`` (seconds since
        the epoch; ``None``: the next invocation, or, ``waiting`` for an event, no time)."""
        self.journal.wake_by(until, waiting=waiting)
        self.suspended = True
        raise Suspend

    def suspend_with(self, child: Cursor) -> None:
        """A child context that ran in this one's task (a side effect's attempt) paused: so
        does this one."""
        if child.suspended:
            self.suspended = True

    def paused(self) -> NoReturn:
        """Suspend this context because its branches paused (each said until when)."""
        self.suspended = True
        raise Suspend

    def finish_check(self) -> None:
        """Called when the workflow (or a branch) returned: every recorded step must have been
        reached."""
        self.check_live()
        left = len(self._own) - self.pos
        if left:
            step = self.record.steps[self._own[self.pos]]
            raise self.fail(
                NonDeterminismError(
                    f"run {self.record.run_id} of workflow {self.record.workflow!r}: the"
                    f" {'branch' if self.path else 'workflow'} returned at"
                    f" {self.where(self.pos)}, where {call(step['kind'], step.get('name'))} and"
                    f" {left - 1} more steps were recorded. The code changed under a paused"
                    " run; the run's record is kept as it was."
                )
            )

    # -- the journal -----------------------------------------------------------------------------

    def replay(self, kind: str, name: str | None) -> dict[str, Any] | None:
        """Return the recorded step at the current position (and move past it), or ``None``
        when the run reaches this point for the first time."""
        if self.suspended or self.journal.fatal is not None:
            self.check_live()
        if self._current_task() is not self._task:
            raise self.fail(
                UsageError(
                    f"run {self.record.run_id} of workflow {self.record.workflow!r}: a step was"
                    " awaited from another task. Steps are recorded by their position, so a"
                    " workflow must await them one at a time, or run them concurrently with"
                    " c.gather() or c.map(), each branch with its own context; not in a task"
                    " group of its own."
                )
            )
        own = self._own
        i = self.pos
        if i >= len(own):
            return None
        step = self.record.steps[own[i]]
        if step["kind"] != kind or step.get("name") != name:
            raise self.fail(
                NonDeterminismError(
                    f"run {self.record.run_id} of workflow {self.record.workflow!r}:"
                    f" {self.where(i)} was recorded as {call(step['kind'], step.get('name'))}"
                    f" but the workflow now reached {call(kind, name)}. The code changed under"
                    " a paused run; the run's record is kept as it was."
                )
            )
        self.pos = i + 1
        return step

    def skip(self, span: int) -> None:
        """Move past ``span`` steps (those recorded inside a side effect being replayed)."""
        self.pos += span

    def append(self, step: dict[str, Any], text: str) -> int:
        """Record a new step (its dict and JSON text, from :mod:`asyncflow._steps`) at the end
        of this context's steps; return its position there."""
        # When it was recorded: the timeline of the run (the dashboard) starts the step here.
        engine = self.engine
        text = stamp(step, text, "at", engine.clock())
        if self.path:
            step["branch"] = self.path
            text = with_branch(text, self.path)
        self._own.append(self.record.append(step, text))
        self.pos = len(self._own)
        engine.dirty = True
        return self.pos - 1

    def step(self, pos: int) -> dict[str, Any]:
        """The step at position ``pos`` of this context."""
        return self.record.steps[self._own[pos]]

    def replace(self, pos: int, step: dict[str, Any], text: str, *, end: bool = False) -> None:
        """Replace the step at ``pos`` of this context (a side effect's outcome), keeping when
        it started; ``end``: record now as when it ended."""
        started = self.record.steps[self._own[pos]].get("at")
        if started is not None and "at" not in step:
            step["at"] = started
            text = f'{text[:-1]},"at":{dumps(started, "")}}}'
        if end:
            text = stamp(step, text, "end", self.engine.clock())
        if self.path:
            step["branch"] = self.path
            text = with_branch(text, self.path)
        self.record.replace(self._own[pos], step, text)
        self.engine.dirty = True

    def mark(self, pos: int, step: dict[str, Any], *, ended: bool = False, **fields: Any) -> None:
        """Record ``fields`` on the step at ``pos`` (its outcome: sent, done, timed out);
        ``ended``: the step ends now (a sleep done, a wait timed out)."""
        self.replace(pos, *marked(step, ended=ended, **fields), end=ended)

    async def checkpoint(self) -> None:
        """Store the run now if steps were recorded since it was stored; storage failing
        stops the run."""
        try:
            await self.engine.checkpoint_if_dirty()
        except AsyncflowError as exc:
            self.fail(exc)  # not the workflow's to handle: the run cannot go on
            raise
