"""The Context a workflow receives, and the replay of its journal."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ._exceptions import (
    AsyncflowError,
    NonDeterminismError,
    SideEffectError,
    UsageError,
    WaitTimeout,
)
from ._record import dumps, new_run_id, step_text

if TYPE_CHECKING:
    import uuid as _uuid
    from datetime import datetime

    from ._engine import Execution

__all__ = ["Context", "Suspend"]

logger = logging.getLogger("asyncflow")


class Suspend(BaseException):
    """Unwinds a workflow that paused.

    A ``BaseException``, like cancellation, so that ``except Exception:`` in user code cannot
    swallow a pause.
    """


class Context:
    """What a workflow (and each side effect) receives as its first argument.

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
        "_fatal",
        "_pos",
        "_record",
        "_suspended",
        "_task",
        "args",
        "run_id",
        "workflow",
    )

    def __init__(self, execution: Execution) -> None:
        self._exec = execution
        self._record = execution.record
        self._pos = 0  # index of the next journal step to replay
        self._suspended = False
        self._fatal: AsyncflowError | None = None
        # Steps are identified by their position, so they must come one at a time from the
        # task running the workflow (side effects nest by being awaited, in that same task).
        self._current_task = _current_task_getter()
        self._task = self._current_task()
        self.run_id = self._record.run_id
        self.workflow = self._record.workflow
        self.args = self._record.args

    def __repr__(self) -> str:
        return f"<Context workflow={self.workflow!r} run_id={self.run_id!r}>"

    # -- the primitives -----------------------------------------------------------------------

    async def log(self, message: object) -> None:
        """Append ``message`` (as text) to the run's log, once: replays do not log it again.

        The line also goes to the ``asyncflow`` logger at INFO level.
        """
        if self._replay("log", None) is not None:
            return
        text = str(message)
        self._append({"kind": "log", "message": text}, step_text("log", message=dumps(text, "")))
        logger.info("%s %s: %s", self.workflow, self.run_id, text)

    async def get_state(self, name: str, default: Any = None) -> Any:
        """Read the shared state value ``name`` (``default`` if it was never set).

        State is shared by every run of the flow. On replay this returns what it returned the
        first time, whatever the state holds now.
        """
        step = self._replay("get_state", name)
        if step is not None:
            return step["value"]
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
        index = self._append(step, dumps(step, ""))
        await self._checkpoint()
        await self._deliver(index, step, "state")

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
        index = self._append(step, dumps(step, ""))
        # Stored before it is delivered: a crash in between delivers it again on replay, with
        # the same id, which starts no run twice.
        await self._checkpoint()
        await self._deliver(index, step, "event")

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
            index = self._append(step, dumps(step, ""))
        else:
            index = self._pos - 1
            if "event" in step:
                return step.get("value")
        until = step.get("until")
        if step.get("timed_out") or (until is not None and self._exec.clock() >= until):
            if not step.get("timed_out"):
                step = {**step, "timed_out": True}
                self._record.replace(index, step, dumps(step, ""))
                self._exec.dirty = True
            raise WaitTimeout(name, float(until or 0))
        self._record.wait_event = name
        return self._suspend_until(until)

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
            done = {**step, "done": True}
            self._record.replace(self._pos - 1, done, dumps(done, ""))
            self._exec.dirty = True
            return
        self._suspend_until(until)

    def _suspend_until(self, until: float | None) -> NoReturn:
        record = self._record
        if until is not None and (record.wake_at is None or until < record.wake_at):
            record.wake_at = until
        self._suspended = True
        raise Suspend

    async def _checkpoint(self) -> None:
        try:
            await self._exec.save()
        except AsyncflowError as exc:
            self._fatal = exc  # not the workflow's to handle: the run cannot go on
            raise

    async def _deliver(
        self, index: int, step: dict[str, Any], kind: str, *, again: bool = False
    ) -> None:
        change = step["change"]
        try:
            await self._exec.invocation.deliver(
                kind, step["name"], change["args"], change["id"], again=again
            )
        except AsyncflowError as exc:
            self._fatal = exc  # storage failing: the run stops, the replay delivers it again
            raise
        sent = {**step, "sent": True}
        self._record.replace(index, sent, dumps(sent, ""))
        self._exec.dirty = True

    async def pause_once(self) -> None:
        """Suspend the run here, once; a later invocation resumes it past this point."""
        if self._replay("pause", None) is not None:
            return
        self._append({"kind": "pause"}, step_text("pause"))
        self._suspended = True
        raise Suspend

    # -- side effects ---------------------------------------------------------------------------

    async def _sideeffect(
        self,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        record = self._record
        step = self._replay("sideeffect", name)
        if step is not None:
            if "value" in step:
                self._pos += step.get("span", 0)
                return step["value"]
            if "error" in step:
                self._pos += step.get("span", 0)
                error = step["error"]
                raise SideEffectError(name, str(error.get("type")), str(error.get("message")))
            # Started but not finished: it paused inside. Enter it again; its inner steps,
            # recorded after it, replay.
            index = self._pos - 1
        else:
            # The previous side effect's outcome must be stored before this one starts.
            try:
                await self._exec.checkpoint_if_dirty()
            except AsyncflowError as exc:
                self._fatal = exc  # not the workflow's to handle: the run cannot go on
                raise
            index = self._append(
                {"kind": "sideeffect", "name": name},
                step_text("sideeffect", name),
            )
        try:
            value = await fn(self, *args, **kwargs)
        except Exception as exc:
            if self._fatal is not None:
                raise  # the run is broken (non-determinism...): not the side effect's failure
            span = self._pos - index - 1
            error = {"type": type(exc).__qualname__, "message": str(exc)}
            record.replace(
                index,
                {"kind": "sideeffect", "name": name, "span": span, "error": error},
                step_text("sideeffect", name, span=str(span), error=dumps(error, "")),
            )
            self._exec.dirty = True
            raise SideEffectError(name, error["type"], error["message"]) from exc
        self._check_live()  # the body may have swallowed a pause or a fatal error
        try:
            value_json = dumps(value, f"the value returned by side effect {name!r}")
        except AsyncflowError as exc:
            self._fatal = exc
            raise
        span = self._pos - index - 1
        value = json.loads(value_json)  # hand back what replays will return
        record.replace(
            index,
            {"kind": "sideeffect", "name": name, "span": span, "value": value},
            step_text("sideeffect", name, span=str(span), value=value_json),
        )
        self._exec.dirty = True
        return value

    # -- journal -----------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._suspended:
            raise Suspend

    def _replay(self, kind: str, name: str | None) -> dict[str, Any] | None:
        """Return the recorded step at the current position (and move past it), or ``None``
        when the run reaches this point for the first time."""
        self._check_live()
        if self._current_task() is not self._task:
            self._fatal = UsageError(
                f"run {self.run_id} of workflow {self.workflow!r}: a step was awaited from"
                " another task. Steps are recorded by their position, so a workflow must await"
                " them one at a time, not concurrently in a task group."
            )
            raise self._fatal
        steps = self._record.steps
        i = self._pos
        if i >= len(steps):
            return None
        step = steps[i]
        if step["kind"] != kind or step.get("name") != name:
            self._fatal = NonDeterminismError(
                f"run {self.run_id} of workflow {self.workflow!r}: step {i + 1} was recorded as"
                f" {_describe(step['kind'], step.get('name'))} but the workflow now reached"
                f" {_describe(kind, name)}. The code changed under a paused run; the run's"
                " record is kept as it was."
            )
            raise self._fatal
        self._pos = i + 1
        return step

    def _append(self, step: dict[str, Any], text: str) -> int:
        index = self._record.append(step, text)
        self._pos = index + 1
        self._exec.dirty = True
        return index

    def _finish_check(self) -> None:
        """Called when the workflow returned: every recorded step must have been reached."""
        self._check_live()
        left = len(self._record.steps) - self._pos
        if left:
            step = self._record.steps[self._pos]
            self._fatal = NonDeterminismError(
                f"run {self.run_id} of workflow {self.workflow!r}: the workflow returned at step"
                f" {self._pos + 1}, where {_describe(step['kind'], step.get('name'))} and"
                f" {left - 1} more steps were recorded. The code changed under a paused run;"
                " the run's record is kept as it was."
            )
            raise self._fatal


def _current_task_getter() -> Callable[[], object]:
    """The cheapest way to ask "which task is this?" under the running async library."""
    # Imported lazily: the running library is loaded already, and a trio user (or a plain
    # `import asyncflow` on a cold start) should not pay for importing asyncio.
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return trio.lowlevel.current_task  # type: ignore[no-any-return]
    import asyncio

    return asyncio.current_task


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise UsageError(f"the {what} name must be a non-empty string, not {name!r}")


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
    known = {"log": "log()", "pause": "pause_once()", "sleep": "sleep()", "now": "now()"}
    return known.get(kind, f"{kind}()")
