"""The Context a workflow receives, and the replay of its journal."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar, overload

from . import _telemetry as telemetry
from ._exceptions import (
    AsyncflowError,
    NonDeterminismError,
    SerializationError,
    SideEffectError,
    UsageError,
    WaitTimeout,
)
from ._journal import Journal, with_branch
from ._record import (
    bounded_traceback,
    dumps,
    new_run_id,
    step_text,
    storable_name,
    storable_text,
)
from ._retry import Retry, attempt, schedule, wait_until

if TYPE_CHECKING:
    import uuid as _uuid
    from datetime import datetime

    from ._engine import Execution

__all__ = ["Context", "Suspend"]

logger = logging.getLogger("asyncflow")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


class Suspend(BaseException):
    """Unwinds a workflow that paused.

    A ``BaseException``, like cancellation, so that ``except Exception:`` in user code cannot
    swallow a pause.
    """


class Context:
    """What a workflow (and each side effect and branch) receives as its first argument.

    Every awaitable on it is replay-safe: the first time a run reaches it, it does its work and
    records the outcome; when the run is replayed, it returns the recorded outcome instead.

    Attributes:
        run_id: the id of the run being executed.
        workflow: the workflow's name.
        args: the arguments the run was started with (as stored: JSON round-tripped).
    """

    __slots__ = (
        "_current_task",
        "_exec",
        "_journal",
        "_own",
        "_path",
        "_pos",
        "_record",
        "_suspended",
        "_task",
        "args",
        "run_id",
        "workflow",
    )

    def __init__(self, execution: Execution) -> None:
        self._setup(Journal(execution), "")

    def _setup(self, journal: Journal, path: str) -> None:
        self._journal = journal
        self._exec = journal.exec
        self._record = journal.record
        self._path = path  # "" for the workflow; see _child
        self._own = journal.index.setdefault(path, [])  # journal indices of this context's steps
        self._pos = 0  # index in _own of the next step to replay
        self._suspended = False
        # Steps are identified by their position in their context, so they must come one at a
        # time from the task that runs the context (side effects nest by being awaited, in
        # that same task; concurrency needs a context per branch: gather, map).
        self._current_task = journal.current_task
        self._task = self._current_task()
        self.run_id = self._record.run_id
        self.workflow = self._record.workflow
        self.args = self._record.args

    def _child(self, label: str) -> Context:
        """A context with a journal of its own, for a branch or a retried attempt.

        Its path names where it was made (``label`` holds the parent's step position), so it is
        the same on every replay, whatever order concurrent branches ran in.
        """
        child = Context.__new__(Context)
        child._setup(self._journal, f"{self._path}/{label}" if self._path else label)
        return child

    def __repr__(self) -> str:
        branch = f" branch={self._path!r}" if self._path else ""
        return f"<Context workflow={self.workflow!r} run_id={self.run_id!r}{branch}>"

    @property
    def _fatal(self) -> AsyncflowError | None:
        """An error that stops the whole run (shared by all its contexts)."""
        return self._journal.fatal

    @_fatal.setter
    def _fatal(self, error: AsyncflowError | None) -> None:
        self._journal.fatal = error

    # -- the primitives -----------------------------------------------------------------------

    async def log(self, message: object) -> None:
        """Append ``message`` (as text) to the run's log, once: replays do not log it again.

        The line also goes to the ``asyncflow`` logger at INFO level.

        Raises:
            SerializationError: the text cannot be stored (a lone surrogate); nothing is
                recorded.
        """
        if self._replay("log", None) is not None:
            return
        text = str(message)
        text_json = dumps(text, "the message logged")
        self._append({"kind": "log", "message": text}, step_text("log", message=text_json))
        logger.info(
            "%s %s: %s",
            self.workflow,
            self.run_id,
            text,
            extra=telemetry.run_extra(self.run_id, self.workflow, "log"),
        )

    async def get_state(self, name: str, default: Any = None) -> Any:
        """Read the shared state value ``name`` (``default`` if it was never set).

        State is shared by every run of the flow. On replay this returns what it returned the
        first time, whatever the state holds now.
        """
        step = self._replay("get_state", name)
        if step is not None:
            return step["value"]
        storable_name(name, "state")
        value_json = await self._exec.read_state(name, default)
        value = json.loads(value_json)
        self._append(
            {"kind": "get_state", "name": name, "value": value},
            step_text("get_state", name, value=value_json),
        )
        return value

    async def set_state(self, name: str, value: Any) -> None:
        """Write the shared state value ``name``; does nothing when the run is replayed.

        Raises:
            SerializationError: ``value`` cannot be stored as JSON (nothing is written).
        """
        step = self._replay("set_state", name)
        if step is not None:
            if "change" in step and not step.get("sent"):
                # Recorded, but the change it made may not have reached its triggers: a crash.
                await self._deliver(self._pos - 1, step, "state", again=True)
            return
        storable_name(name, "state")
        value_json = dumps(value, f"the value for state {name!r}")
        if not self._exec.invocation.state_triggered(name):
            await self._exec.write_state(name, value_json)
            self._append(
                {"kind": "set_state", "name": name, "value": json.loads(value_json)},
                step_text("set_state", name, value=value_json),
            )
            return
        # Workflows run on changes of this state: find out whether this is one, and record
        # the change (with an id for the runs it starts) before they are started.
        old = json.loads(await self._exec.read_state(name, None))
        new = json.loads(value_json)
        await self._exec.write_state(name, value_json)
        step = {"kind": "set_state", "name": name, "value": new}
        if old == new:
            self._append(step, step_text("set_state", name, value=value_json))
            return
        step["change"] = {"id": new_run_id(), "args": {"old": old, "new": new}}
        self._append(step, dumps(step, ""))
        await self._checkpoint()
        await self._deliver(self._pos - 1, step, "state")

    async def event(self, name: str, args: Any = None) -> None:
        """Emit event ``name`` with ``args``, once: replays do not emit it again.

        It starts the workflows bound to ``name`` and wakes the runs waiting for it in
        :meth:`wait_event`, within this invocation: they execute before it returns.

        Raises:
            SerializationError: ``args`` cannot be stored as JSON.
        """
        step = self._replay("event", name)
        if step is not None:
            if not step.get("sent"):
                await self._deliver(self._pos - 1, step, "event", again=True)
            return
        _check_name(name, "event")
        args_json = dumps(args, f"the args of event {name!r}")
        change = {"id": new_run_id(), "args": json.loads(args_json)}
        step = {"kind": "event", "name": name, "change": change}
        self._append(step, dumps(step, ""))
        pos = self._pos - 1
        # Stored before it is delivered: a crash in between delivers it again on replay, with
        # the same id, which starts no run twice.
        await self._checkpoint()
        await self._deliver(pos, step, "event")

    async def wait_event(self, name: str, timeout: float | None = None) -> Any:
        """Suspend the run until event ``name`` is emitted, and return the event's args.

        Only events emitted after the wait began count; each is received once. The run is not
        replayed while it waits: an emitter finds it through an index.

        Args:
            name: the event to wait for.
            timeout: give up after this many seconds (of the flow's clock).

        Raises:
            WaitTimeout: ``timeout`` passed with no such event (recorded: replays raise it too).
        """
        step = self._replay("wait_event", name)
        if step is None:
            _check_name(name, "event")
            now = self._exec.clock()
            until = None if timeout is None else now + _seconds(timeout, "timeout")
            step = {"kind": "wait_event", "name": name, "since": new_run_id(), "until": until}
            self._append(step, dumps(step, ""))
        elif "event" in step:
            return step.get("value")
        pos = self._pos - 1
        until = step.get("until")
        if step.get("timed_out") or (until is not None and self._exec.clock() >= until):
            if not step.get("timed_out"):
                self._mark(pos, step, timed_out=True, ended=True)
            raise WaitTimeout(name, float(until or 0))
        record = self._record
        if record.wait_event not in (None, name):
            # The index holds one event per run: branches waiting for different events at once
            # would leave one of them unwoken.
            self._fatal = UsageError(
                f"run {self.run_id} of workflow {self.workflow!r}: branches wait for events"
                f" {record.wait_event!r} and {name!r} at once; a run can wait for one event"
                " name at a time"
            )
            raise self._fatal
        record.wait_event = name
        return self._suspend(until, waiting=True)

    # -- time and chance ---------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Suspend the run for ``seconds`` of the flow's clock, durably.

        Invocations before the deadline skip the run without replaying it; the first one after
        it resumes the run here. :meth:`Flow.next_wakeup` says when that is due.
        """
        step = self._replay("sleep", None)
        if step is None:
            until = self._exec.clock() + _seconds(seconds, "seconds")
            step = self._record_sleep(until)
        await self._sleep_step(step)

    async def sleep_until(self, when: datetime) -> None:
        """Suspend the run until ``when`` (a timezone-aware datetime), durably; see
        :meth:`sleep`."""
        from datetime import datetime

        step = self._replay("sleep", None)
        if step is None:
            if not isinstance(when, datetime) or when.tzinfo is None:
                raise UsageError(
                    f"sleep_until() needs a timezone-aware datetime (such as"
                    f" datetime.now(timezone.utc) + timedelta(hours=1)), not {when!r}"
                )
            step = self._record_sleep(when.timestamp())
        await self._sleep_step(step)

    async def now(self) -> datetime:
        """The current time (UTC, from the flow's clock), recorded: replays return the same."""
        from datetime import datetime, timezone

        step = self._replay("now", None)
        if step is not None:
            value = float(step["value"])
        else:
            value = self._exec.clock()
            self._append({"kind": "now", "value": value}, step_text("now", value=repr(value)))
        return datetime.fromtimestamp(value, timezone.utc)

    async def random(self) -> float:
        """A random float in [0, 1), recorded: replays return the same."""
        step = self._replay("random", None)
        if step is not None:
            return float(step["value"])
        import random  # (loaded on first use: an import costs every cold start)

        value = random.random()
        self._append({"kind": "random", "value": value}, step_text("random", value=repr(value)))
        return value

    async def uuid(self) -> _uuid.UUID:
        """A random UUID (version 4), recorded: replays return the same."""
        import uuid

        step = self._replay("uuid", None)
        if step is not None:
            return uuid.UUID(step["value"])
        value = uuid.uuid4()
        self._append({"kind": "uuid", "value": str(value)}, step_text("uuid", value=f'"{value}"'))
        return value

    def _record_sleep(self, until: float) -> dict[str, Any]:
        step = {"kind": "sleep", "until": until}
        self._append(step, dumps(step, ""))
        return step

    async def _sleep_step(self, step: dict[str, Any]) -> None:
        if step.get("done"):
            return
        until = float(step["until"])
        if self._exec.clock() >= until:
            # Marked, so that a clock set back later cannot put the run to sleep again here.
            self._mark(self._pos - 1, step, done=True, ended=True)
            return
        self._suspend(until)

    async def _deliver(
        self, pos: int, step: dict[str, Any], kind: str, *, again: bool = False
    ) -> None:
        """Deliver the event or state change recorded at ``pos`` (of this context's journal),
        then mark it sent."""
        change = step["change"]
        try:
            await self._exec.invocation.deliver(
                kind, step["name"], change["args"], change["id"], again=again
            )
        except AsyncflowError as exc:
            self._fatal = exc  # storage failing: the run stops, the replay delivers it again
            raise
        self._mark(pos, step, sent=True)

    async def pause_once(self) -> None:
        """Suspend the run here, once; a later invocation resumes it past this point.

        In a branch (:meth:`gather`, :meth:`map`), the branch stops here and the run suspends
        once every other branch has finished or paused too.
        """
        if self._replay("pause", None) is not None:
            return
        self._append({"kind": "pause"}, step_text("pause"))
        self._suspend(None)

    # -- parallel branches ----------------------------------------------------------------------

    @overload
    async def gather(
        self,
        *branches: Callable[[Context], Awaitable[T]],
        limit: int | None = None,
        return_exceptions: Literal[False] = False,
    ) -> list[T]: ...

    @overload
    async def gather(
        self,
        *branches: Callable[[Context], Awaitable[T]],
        limit: int | None = None,
        return_exceptions: Literal[True],
    ) -> list[T | Exception]: ...

    async def gather(
        self,
        *branches: Callable[[Context], Awaitable[T]],
        limit: int | None = None,
        return_exceptions: bool = False,
    ) -> list[T] | list[T | Exception]:
        """Run ``branches`` concurrently, each as ``await branch(child)``; return their results
        in the order given.

        Each branch gets a child context with a journal of its own, so its steps replay the
        same whatever order the branches ran in. A branch is any callable taking the child
        context: a side effect that takes no other argument, an ``async def f(c)``, or
        ``lambda c: charge(c, 10)``. The workflow must not use its own context (``self``) in a
        branch; that would be a step from another task (:class:`UsageError`).

        Every branch runs until it returns, raises or pauses: a failing branch does not cancel
        the others, so what each branch did is recorded and replays the same. Then:

        - if a branch paused, the run suspends, and a later invocation replays every branch
          (the finished ones without executing their side effects again);
        - else if branches raised, the first of them in the order given is raised (or, with
          ``return_exceptions=True``, every exception takes its branch's place in the list);
        - else the results are returned.

        Args:
            branches: the branches, ``async`` callables taking a :class:`Context`.
            limit: run at most this many branches at once (started in the order given);
                ``None``: all at once.
            return_exceptions: return exceptions in the list instead of raising the first.

        Raises:
            NonDeterminismError: a replay reached this call with another number of branches.
            UsageError: ``limit`` is not a positive integer.
        """
        from ._branches import gather

        return await gather(self, branches, limit, return_exceptions)  # type: ignore[no-any-return]

    async def map(
        self,
        fn: Callable[[Context, I], Awaitable[T]],
        items: Iterable[I],
        *,
        limit: int | None = None,
    ) -> list[T]:
        """``await fn(child, item)`` for each of ``items`` concurrently, as branches of
        :meth:`gather`; return the results in the order of ``items``.

        Args:
            fn: an ``async`` callable taking a child :class:`Context` and an item (a side
                effect taking one argument is one).
            items: what to map over, read once. The number of items must be the same on
                every replay.
            limit: run at most this many at once; ``None``: all at once.
        """
        from ._branches import bind

        return await self.gather(*[bind(fn, item) for item in items], limit=limit)

    # -- side effects ---------------------------------------------------------------------------

    async def _sideeffect(
        self,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry | None = None,
        time_limit: float | None = None,
    ) -> Any:
        step = self._replay("sideeffect", name)
        failed = 0  # attempts that failed so far
        retry_at: float | None = None
        if step is not None:
            if "value" in step:
                self._pos += step.get("span", 0)
                return step["value"]
            if "error" in step:
                self._pos += step.get("span", 0)
                error = step["error"]
                trace = error.get("traceback")
                raise SideEffectError(
                    name,
                    str(error.get("type")),
                    str(error.get("message")),
                    attempts=step.get("attempts", 1),
                    traceback=trace if isinstance(trace, str) else None,
                )
            # Started but not finished: it paused inside, or waits to be retried. Enter it
            # again; its inner steps, recorded after it (or in its attempt's journal), replay.
            pos = self._pos - 1
            failed = step.get("attempts", 0)
            retry_at = step.get("retry_at")
        else:
            # The previous side effect's outcome must be stored before this one starts.
            await self._checkpoint()
            dirty = self._exec.dirty
            self._append({"kind": "sideeffect", "name": name}, step_text("sideeffect", name))
            # Its start alone need not be stored: should the run crash before its outcome is,
            # the replay executes it again either way. (Branches starting together would
            # otherwise write the record once each.)
            self._exec.dirty = dirty
            pos = self._pos - 1
        while True:
            if retry_at is not None:
                await wait_until(self, retry, retry_at)
            # A retried side effect runs each attempt in a journal of its own: the next attempt
            # must not replay the steps of one that failed.
            ctx = self if retry is None else self._child(f"{pos}#{failed + 1}")
            try:
                try:
                    with telemetry.span(
                        "asyncflow.sideeffect",
                        {"run_id": self._exec.record.run_id, "step": name, "attempt": failed + 1},
                    ):
                        value = await attempt(name, fn, ctx, args, kwargs, time_limit)
                finally:
                    if ctx._suspended:
                        self._suspended = True
            except Exception as exc:
                # The run is broken (non-determinism...) or the body swallowed a pause: not
                # the side effect's failure.
                self._check_live()
                failed += 1
                error = {"type": type(exc).__qualname__, "message": storable_text(str(exc))}
                logger.info(
                    "%s %s: side effect %s raised %s: %s (attempt %d)",
                    self.workflow,
                    self.run_id,
                    name,
                    error["type"],
                    error["message"],
                    failed,
                    extra=telemetry.run_extra(self.run_id, self.workflow, name),
                )
                if retry is not None and failed < retry.attempts and retry.retries(exc):
                    retry_at = schedule(self, name, pos, retry, failed, error)
                    # Stored before the wait: a crash meanwhile must not forget the attempt.
                    await self._checkpoint()
                    continue
                error["traceback"] = bounded_traceback(exc)
                await self._fail_step(name, pos, error, None if retry is None else failed, exc)
            try:
                value_json = self._storable(name, value)
            except SerializationError as exc:
                # It ran, but what it returned cannot be stored: its recorded failure, so that
                # replays raise it without running it again (not retried: it did its work).
                failed += 1
                error = {"type": "SerializationError", "message": str(exc)}
                await self._fail_step(name, pos, error, None if retry is None else failed, exc)
            attempts = None if retry is None else failed + 1
            value = self._record_value(name, pos, value_json, attempts)
            await self._store_outcome()
            return value

    async def _fail_step(
        self,
        name: str,
        pos: int,
        error: dict[str, str],
        attempts: int | None,
        exc: Exception,
    ) -> NoReturn:
        """Record the side effect at ``pos`` as failed with ``error``; raise it to the caller."""
        outcome: dict[str, Any] = {"kind": "sideeffect", "name": name, "span": self._pos - pos - 1}
        outcome["error"] = error
        if attempts is not None:
            outcome["attempts"] = attempts
        self._replace(pos, outcome, _outcome_text(outcome), end=True)
        await self._store_outcome()
        raise SideEffectError(
            name,
            error["type"],
            error["message"],
            attempts=attempts or 1,
            traceback=error.get("traceback"),
        ) from exc

    def _storable(self, name: str, value: Any) -> str:
        """The JSON text of what side effect ``name`` returned (SerializationError if none)."""
        self._check_live()  # the body may have swallowed a pause or a fatal error
        return dumps(value, f"the value returned by side effect {name!r}")

    async def _store_outcome(self) -> None:
        """Store a side effect's outcome now if branches are running.

        Alone, a run stores an outcome when its next side effect starts (or the run stops), so
        a crash re-executes only the side effect in flight. With branches, "next" may be far
        off (a sibling in a long call): stored now, or a crash would execute it again.
        """
        if self._journal.gathers:
            await self._checkpoint()

    def _record_value(self, name: str, pos: int, value_json: str, attempts: int | None) -> Any:
        """Record what the side effect at ``pos`` returned (as JSON text); return it as
        replays will."""
        value = json.loads(value_json)  # hand back what replays will return
        outcome = {"kind": "sideeffect", "name": name, "span": self._pos - pos - 1}
        if attempts is not None:
            outcome["attempts"] = attempts
        outcome["value"] = value
        self._replace(pos, outcome, _outcome_text(outcome, value_json), end=True)
        return value

    async def _checkpoint(self) -> None:
        try:
            await self._exec.checkpoint_if_dirty()
        except AsyncflowError as exc:
            self._fatal = exc  # not the workflow's to handle: the run cannot go on
            raise

    # -- journal -----------------------------------------------------------------------------

    def _check_live(self) -> None:
        fatal = self._journal.fatal
        if fatal is not None:
            raise fatal
        if self._suspended:
            raise Suspend

    def _suspend(self, until: float | None, *, waiting: bool = False) -> NoReturn:
        """Suspend this context (and, once it unwinds, the run) until ``until`` (seconds since
        the epoch; ``None``: the next invocation, or, ``waiting`` for an event, no time)."""
        journal = self._journal
        if until is None:
            if not waiting:
                journal.due_now = True
        elif journal.wake_at is None or until < journal.wake_at:
            journal.wake_at = until
        self._suspended = True
        raise Suspend

    def _replay(self, kind: str, name: str | None) -> dict[str, Any] | None:
        """Return the recorded step at the current position (and move past it), or ``None``
        when the run reaches this point for the first time."""
        if self._suspended or self._journal.fatal is not None:
            self._check_live()
        if self._current_task() is not self._task:
            self._fatal = UsageError(
                f"run {self.run_id} of workflow {self.workflow!r}: a step was awaited from"
                " another task. Steps are recorded by their position, so a workflow must await"
                " them one at a time, or run them concurrently with c.gather() or c.map(),"
                " each branch with its own context; not in a task group of its own."
            )
            raise self._fatal
        own = self._own
        i = self._pos
        if i >= len(own):
            return None
        step = self._record.steps[own[i]]
        if step["kind"] != kind or step.get("name") != name:
            self._fatal = NonDeterminismError(
                f"run {self.run_id} of workflow {self.workflow!r}: {self._where(i)} was recorded"
                f" as {_describe(step['kind'], step.get('name'))} but the workflow now reached"
                f" {_describe(kind, name)}. The code changed under a paused run; the run's"
                " record is kept as it was."
            )
            raise self._fatal
        self._pos = i + 1
        return step

    def _append(self, step: dict[str, Any], text: str) -> int:
        """Record a new step at the end of this context's journal; return its index in the
        run's journal."""
        # When it was recorded: the timeline of the run (the dashboard) starts the step here.
        at = self._exec.clock()
        step["at"] = at
        text = f'{text[:-1]},"at":{dumps(at, "the clock time")}}}'
        if self._path:
            step["branch"] = self._path
            text = with_branch(text, self._path)
        index = self._record.append(step, text)
        self._own.append(index)
        self._pos = len(self._own)
        self._exec.dirty = True
        return index

    def _replace(self, pos: int, step: dict[str, Any], text: str, *, end: bool = False) -> None:
        """Replace the step at ``pos`` in this context's journal (a side effect's outcome),
        keeping when it started; ``end``: record now as when it ended."""
        started = self._record.steps[self._own[pos]].get("at")
        if started is not None and "at" not in step:
            step["at"] = started
            text = f'{text[:-1]},"at":{dumps(started, "")}}}'
        if end:
            step["end"] = now = self._exec.clock()
            text = f'{text[:-1]},"end":{dumps(now, "the clock time")}}}'
        if self._path:
            step["branch"] = self._path
            text = with_branch(text, self._path)
        self._record.replace(self._own[pos], step, text)
        self._exec.dirty = True

    def _mark(self, pos: int, step: dict[str, Any], *, ended: bool = False, **fields: Any) -> None:
        """Record ``fields`` on the step at ``pos`` (its outcome: sent, done, timed out);
        ``ended``: the step ends now (a sleep done, a wait timed out)."""
        dropped = ("branch", "end") if ended else ("branch",)
        marked = {k: v for k, v in step.items() if k not in dropped} | fields
        self._replace(pos, marked, dumps(marked, ""), end=ended)

    def _where(self, pos: int) -> str:
        return f"step {pos + 1}" + (f" of branch {self._path}" if self._path else "")

    def _finish_check(self) -> None:
        """Called when the workflow (or a branch) returned: every recorded step must have been
        reached."""
        self._check_live()
        left = len(self._own) - self._pos
        if left:
            step = self._record.steps[self._own[self._pos]]
            self._fatal = NonDeterminismError(
                f"run {self.run_id} of workflow {self.workflow!r}: the"
                f" {'branch' if self._path else 'workflow'} returned at {self._where(self._pos)},"
                f" where {_describe(step['kind'], step.get('name'))} and"
                f" {left - 1} more steps were recorded. The code changed under a paused run;"
                " the run's record is kept as it was."
            )
            raise self._fatal


def _outcome_text(step: dict[str, Any], value_json: str | None = None) -> str:
    fields = {"span": str(step["span"])}
    if "error" in step:
        fields["error"] = dumps(step["error"], "")
    if "attempts" in step:
        fields["attempts"] = str(step["attempts"])
    if value_json is not None:
        fields["value"] = value_json
    return step_text("sideeffect", step["name"], **fields)


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise UsageError(f"the {what} name must be a non-empty string, not {name!r}")
    storable_name(name, what)


def _seconds(value: object, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise UsageError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def _describe(kind: str, name: str | None) -> str:
    if kind == "sideeffect":
        return f"side effect {name!r}"
    if kind in ("get_state", "set_state"):
        return f"{kind}({name!r})"
    if kind in ("event", "wait_event"):
        return f"{kind}({name!r})"
    known = {"log": "log()", "pause": "pause_once()", "gather": "gather()", "sleep": "sleep()"}
    return known.get(kind, f"{kind}()")
