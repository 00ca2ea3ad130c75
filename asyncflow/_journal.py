"""The journal of one run as its contexts see it: steps indexed by branch path, what the
contexts of the run share, and the one interface through which they reach the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ._exceptions import AsyncflowError
from ._record import RunRecord

__all__ = ["Journal", "RunEngine", "current_task_getter"]


class RunEngine(Protocol):
    """What a run's contexts need of the engine executing the run; all they reach it by.

    :class:`asyncflow._engine.Execution` implements it (with storage behind it); the contexts,
    the branches and the side-effect runner never see the engine, the backend or the
    invocation.
    """

    #: The run being executed: its journal of steps, what it waits for.
    record: RunRecord
    #: Steps were recorded since the last checkpoint (set by every recorded step).
    dirty: bool
    #: The flow's clock: seconds since the epoch.
    clock: Callable[[], float]

    async def read_state(self, name: str, default: Any) -> str:
        """The JSON text of shared state ``name``, or of ``default`` if it is not set."""
        ...

    async def write_state(self, name: str, value_json: str) -> None:
        """Set shared state ``name`` to ``value_json``."""
        ...

    def state_triggered(self, name: str) -> bool:
        """Whether workflows are started by changes of state ``name``."""
        ...

    async def deliver(
        self, kind: str, name: str, args: Any, event_id: str, *, again: bool = False
    ) -> None:
        """Deliver an event (``kind`` ``"event"``) or a state change (``"state"``) with id
        ``event_id``: the runs it starts or wakes execute in this invocation. ``again``: it
        may have been delivered before (a replay after a crash)."""
        ...

    async def checkpoint_if_dirty(self) -> None:
        """Store the run if steps were recorded since it was last stored."""
        ...


class Journal:
    """What the contexts of one run share: the engine, the run's steps indexed by branch path,
    a fatal error, and when the run asked to be resumed."""

    __slots__ = (
        "current_task",
        "due_now",
        "engine",
        "fatal",
        "gathers",
        "index",
        "record",
        "wake_at",
    )

    def __init__(self, engine: RunEngine) -> None:
        self.engine = engine
        self.record = engine.record
        #: An error that stops the whole run (set by any of its contexts).
        self.fatal: AsyncflowError | None = None
        # Every context (the workflow's, each branch's, each retried attempt's) replays its own
        # steps: the indices of the journal steps recorded with its branch path. One pass here
        # keeps replay linear however branches interleaved when they were recorded.
        record = self.record
        steps = record.steps
        if record.step_json or '"branch":' in record.loaded_json:
            self.index: dict[str, list[int]] = {"": []}
            for i, step in enumerate(steps):
                self.index.setdefault(step.get("branch", ""), []).append(i)
        else:
            # The text of a branch's step holds this key; without it (the common case), every
            # step is the workflow's own. (A value may hold it too: then the loop above.)
            self.index = {"": list(range(len(steps)))}
        self.current_task = current_task_getter()
        self.wake_at: float | None = None  # earliest time a suspended context asked for
        self.due_now = False  # a context suspended until the next invocation
        self.gathers = 0  # gathers under way: branches are running concurrently

    def resume_at(self) -> float | None:
        """When the suspended run is due again (``None``: at the next invocation)."""
        return None if self.due_now else self.wake_at

    def wake_by(self, until: float | None, *, waiting: bool = False) -> None:
        """A context suspends until ``until`` (seconds since the epoch; ``None``: the next
        invocation, or, ``waiting`` for an event, no time)."""
        if until is None:
            if not waiting:
                self.due_now = True
        elif self.wake_at is None or until < self.wake_at:
            self.wake_at = until


def current_task_getter() -> Callable[[], object]:
    """The cheapest way to ask "which task is this?" under the running async library."""
    # Asked the way anyio and httpx ask (sniffio), never by calling into trio: an old trio
    # that is merely installed next to asyncio (0.22 has no `lowlevel.in_trio_run`) must not
    # break asyncio runs. Imported lazily: the running library is loaded already, and a trio
    # user (or a plain `import asyncflow` on a cold start) should not pay for asyncio.
    import sniffio

    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_task
    import asyncio

    return asyncio.current_task
