"""The journal of one run as its contexts see it: steps indexed by branch path, and what
the contexts of the run share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._record import name_json

if TYPE_CHECKING:
    from ._engine import Execution
    from ._exceptions import AsyncflowError

__all__ = ["Journal", "with_branch"]


class Journal:
    """What the contexts of one run share: its execution, its steps indexed by branch path, a
    fatal error, and when the run asked to be resumed."""

    __slots__ = (
        "current_task",
        "due_now",
        "exec",
        "fatal",
        "gathers",
        "index",
        "record",
        "wake_at",
    )

    def __init__(self, execution: Execution) -> None:
        self.exec = execution
        self.record = execution.record
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


def with_branch(text: str, path: str) -> str:
    """The JSON text of a step with the ``branch`` field of its context's path."""
    return f'{text[:-1]},"branch":{name_json(path)}}}'


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
