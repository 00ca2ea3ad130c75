"""The Context a workflow receives: the primitives a workflow calls.

Each primitive replays its step or records it through the context's replay cursor
(:mod:`asyncflow._cursor`), builds the step with the step schema (:mod:`asyncflow._steps`),
and reaches the engine only through :class:`asyncflow._journal.RunEngine`. Side effects run
in :mod:`asyncflow._sideeffect`, branches in :mod:`asyncflow._branches`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _steps as steps
from . import _telemetry as telemetry
from ._cursor import Cursor, Suspend
from ._exceptions import AsyncflowError, UsageError, WaitTimeout
from ._journal import Journal, RunEngine
from ._record import dumps, new_run_id, storable_name
from ._retry import Retry
from ._sideeffect import run_sideeffect
from ._validate import name as checked_name
from ._validate import seconds

if TYPE_CHECKING:
    import uuid as _uuid
    from datetime import datetime

__all__ = ["Context", "Suspend", "root_cursor", "sideeffect"]


T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


class Context:
    """What a workflow (and each side effect and branch) receives as its first argument.

    Every awaitable on it is replay-safe: the first time a run reaches it, it does its work and
    records the outcome; when the run is replayed, it returns the recorded outcome instead.

    Attributes:
        run_id: the id of the run being executed.
        workflow: the workflow's name.
        args: the arguments the run was started with (as stored: JSON round-tripped).
    """

    __slots__ = ("_cursor", "_engine", "args", "run_id", "workflow")

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor
        self._engine = cursor.engine
        record = cursor.record
        self.run_id = record.run_id
        self.workflow = record.workflow
        self.args = record.args

    def __repr__(self) -> str:
        path = self._cursor.path
        branch = f" branch={path!r}" if path else ""
        return f"<Context workflow={self.workflow!r} run_id={self.run_id!r}{branch}>"

    # -- the primitives -----------------------------------------------------------------------

    async def log(self, message: object) -> None:
        """Append ``message`` (as text) to the run's log, once: replays do not log it again.

        The line also goes to the ``asyncflow`` logger at INFO level.

        Raises:
            SerializationError: the text cannot be stored (a lone surrogate); nothing is
                recorded.
        """
        if self._cursor.replay("log", None) is not None:
            return
        text = str(message)
        self._cursor.append(*steps.log(text))
        telemetry.logger.info(
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
        step = self._cursor.replay("get_state", name)
        if step is None:
            storable_name(name, "state")
            step, text = steps.get_state(name, await self._engine.read_state(name, default))
            self._cursor.append(step, text)
        return step["value"]

    async def set_state(self, name: str, value: Any) -> None:
        """Write the shared state value ``name``; does nothing when the run is replayed.

        Raises:
            SerializationError: ``value`` cannot be stored as JSON (nothing is written).
        """
        cursor, engine = self._cursor, self._engine
        step = cursor.replay("set_state", name)
        if step is not None:
            if "change" in step and not step.get("sent"):
                # Recorded, but the change it made may not have reached its triggers: a crash.
                await self._deliver(cursor.pos - 1, step, "state", again=True)
            return
        storable_name(name, "state")
        value_json = dumps(value, f"the value for state {name!r}")
        if not engine.state_triggered(name):
            await engine.write_state(name, value_json)
            cursor.append(*steps.set_state(name, value_json))
            return
        # Workflows run on changes of this state: find out whether this is one, and record
        # the change (with an id for the runs it starts) before they are started.
        old = json.loads(await engine.read_state(name, None))
        new = json.loads(value_json)
        await engine.write_state(name, value_json)
        if old == new:
            cursor.append(*steps.set_state(name, value_json))
            return
        step, text = steps.state_change(name, old, new, new_run_id())
        pos = cursor.append(step, text)
        await cursor.checkpoint()
        await self._deliver(pos, step, "state")

    async def event(self, name: str, args: Any = None) -> None:
        """Emit event ``name`` with ``args``, once: replays do not emit it again.

        It starts the workflows bound to ``name`` and wakes the runs waiting for it in
        :meth:`wait_event`, within this invocation: they execute before it returns.

        Raises:
            SerializationError: ``args`` cannot be stored as JSON.
        """
        cursor = self._cursor
        step = cursor.replay("event", name)
        if step is not None:
            if not step.get("sent"):
                await self._deliver(cursor.pos - 1, step, "event", again=True)
            return
        _check_name(name, "event")
        args_json = dumps(args, f"the args of event {name!r}")
        event_id = new_run_id()
        step, text = steps.event(name, json.loads(args_json), event_id)
        pos = cursor.append(step, text)
        # Stored before it is delivered: a crash in between delivers it again on replay, with
        # the same id, which starts no run twice.
        await cursor.checkpoint()
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
        cursor, clock = self._cursor, self._engine.clock
        step = cursor.replay("wait_event", name)
        if step is None:
            _check_name(name, "event")
            now = clock()
            until = None if timeout is None else now + _seconds(timeout, "timeout")
            step, text = steps.wait_event(name, new_run_id(), until)
            cursor.append(step, text)
        elif "event" in step:
            return step.get("value")
        pos = cursor.pos - 1
        until = step.get("until")
        if step.get("timed_out") or (until is not None and clock() >= until):
            if not step.get("timed_out"):
                cursor.mark(pos, step, ended=True, timed_out=True)
            raise WaitTimeout(name, float(until or 0))
        record = cursor.record
        if record.wait_event not in (None, name):
            # The index holds one event per run: branches waiting for different events at once
            # would leave one of them unwoken.
            raise cursor.fail(
                UsageError(
                    f"run {self.run_id} of workflow {self.workflow!r}: branches wait for events"
                    f" {record.wait_event!r} and {name!r} at once; a run can wait for one event"
                    " name at a time"
                )
            )
        record.wait_event = name
        return cursor.suspend(until, waiting=True)

    # -- time and chance ---------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Suspend the run for ``seconds`` of the flow's clock, durably.

        Invocations before the deadline skip the run without replaying it; the first one after
        it resumes the run here. :meth:`Flow.next_wakeup` says when that is due.
        """
        step = self._cursor.replay("sleep", None)
        if step is None:
            until = self._engine.clock() + _seconds(seconds, "seconds")
            step = self._record_sleep(until)
        await self._sleep_step(step)

    async def sleep_until(self, when: datetime) -> None:
        """Suspend the run until ``when`` (a timezone-aware datetime), durably; see
        :meth:`sleep`."""
        from datetime import datetime

        step = self._cursor.replay("sleep", None)
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

        step = self._cursor.replay("now", None)
        if step is not None:
            value = float(step["value"])
        else:
            value = self._engine.clock()
            self._cursor.append(*steps.now(value))
        return datetime.fromtimestamp(value, timezone.utc)

    async def random(self) -> float:
        """A random float in [0, 1), recorded: replays return the same."""
        step = self._cursor.replay("random", None)
        if step is not None:
            return float(step["value"])
        import random  # (loaded on first use: an import costs every cold start)

        value = random.random()
        self._cursor.append(*steps.random(value))
        return value

    async def uuid(self) -> _uuid.UUID:
        """A random UUID (version 4), recorded: replays return the same."""
        import uuid

        step = self._cursor.replay("uuid", None)
        if step is not None:
            return uuid.UUID(step["value"])
        value = uuid.uuid4()
        self._cursor.append(*steps.uuid(str(value)))
        return value

    def _record_sleep(self, until: float) -> dict[str, Any]:
        step, text = steps.sleep(until)
        self._cursor.append(step, text)
        return step

    async def _sleep_step(self, step: dict[str, Any]) -> None:
        if step.get("done"):
            return
        until = float(step["until"])
        cursor = self._cursor
        if self._engine.clock() >= until:
            # Marked, so that a clock set back later cannot put the run to sleep again here.
            cursor.mark(cursor.pos - 1, step, ended=True, done=True)
            return
        cursor.suspend(until)

    async def _deliver(
        self, pos: int, step: dict[str, Any], kind: str, *, again: bool = False
    ) -> None:
        """Deliver the event or state change recorded at ``pos`` (of this context's journal),
        then mark it sent."""
        change = step["change"]
        try:
            await self._engine.deliver(
                kind, step["name"], change["args"], change["id"], again=again
            )
        except AsyncflowError as exc:
            # Storage failing: the run stops, the replay delivers it again.
            self._cursor.fail(exc)
            raise
        self._cursor.mark(pos, step, sent=True)

    async def pause_once(self) -> None:
        """Suspend the run here, once; a later invocation resumes it past this point.

        In a branch (:meth:`gather`, :meth:`map`), the branch stops here and the run suspends
        once every other branch has finished or paused too.
        """
        if self._cursor.replay("pause", None) is not None:
            return
        self._cursor.append(*steps.pause())
        self._cursor.suspend(None)

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
        # (Loaded on first use, as a one-way import: a cold start without branches skips it.)
        from ._branches import gather

        return await gather(  # type: ignore[no-any-return]
            self._cursor, Context, branches, limit, return_exceptions
        )

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


def _check_name(name: object, what: str) -> None:
    checked_name(name, f"the {what} name", error=UsageError)
    storable_name(name, what)  # type: ignore[arg-type]


def _seconds(value: object, what: str) -> float:
    return seconds(value, what, error=UsageError, zero=True)


def root_cursor(engine: RunEngine) -> Cursor:
    """The cursor of the workflow's context in a new execution of the run ``engine`` holds."""
    return Cursor(Journal(engine))


async def sideeffect(
    c: Context,
    name: str,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry: Retry | None = None,
    time_limit: float | None = None,
) -> Any:
    """Run side effect ``name`` (``fn(c, *args, **kwargs)``) in context ``c``, or replay its
    outcome: what a function made a side effect by ``flow.sideeffect()`` does."""
    return await run_sideeffect(
        c, c._cursor, Context, name, fn, args, kwargs, retry=retry, time_limit=time_limit
    )
