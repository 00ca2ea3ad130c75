"""Blocking calls run in worker threads, many per thread hop."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

__all__ = ["GroupRunner", "ThreadBatcher"]

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("error", "fn", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.value: T | None = None
        self.error: BaseException | None = None


def _run_all(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        try:
            job.value = job.fn()
        except BaseException as exc:  # handed to the job's caller, who re-raises it
            job.error = exc


Q = TypeVar("Q")


class _Hop(Generic[Q]):
    """Entries handed to a worker thread together, and the one event their callers wait
    for (an event per entry made 20,000 calls cost about 6 % more of the event loop)."""

    __slots__ = ("done", "entries")

    def __init__(self) -> None:
        self.entries: list[Q] = []
        self.done = anyio.Event()


class _Leaders(Generic[Q]):
    """The queue both runners share. Callers queue an entry; up to ``threads`` of them become
    leaders, each handing the queued entries to :meth:`_work` in a worker thread, up to
    ``size`` per hop, until the queue is empty."""

    def __init__(self, threads: int, size: int) -> None:
        self._max_leaders = threads
        self._size = size
        self._leaders = 0
        self._queue: deque[_Hop[Q]] = deque()  # each holds at most size entries
        self._open: _Hop[Q] | None = None  # the last hop queued, while no leader took it

    def _work(self, entries: list[Q]) -> None:
        """Process ``entries`` (in a worker thread), setting each one's outcome."""
        raise NotImplementedError

    async def _submit(self, entry: Q) -> None:
        """Queue ``entry`` and return once it is processed."""
        hop = self._open
        if hop is None or len(hop.entries) >= self._size:
            hop = self._open = _Hop()
            self._queue.append(hop)
        hop.entries.append(entry)
        # Shielded: once queued the entry is processed, as with anyio.to_thread; a leader
        # cancelled half-way would leave the callers of its hop waiting for ever.
        with anyio.CancelScope(shield=True):
            if self._leaders < self._max_leaders:
                self._leaders += 1
                try:
                    while self._queue:
                        taken = self._queue.popleft()
                        if taken is self._open:
                            self._open = None
                        try:
                            await anyio.to_thread.run_sync(self._work, taken.entries)
                        finally:
                            taken.done.set()
                finally:
                    self._leaders -= 1
            await hop.done.wait()


class ThreadBatcher(_Leaders[_Job[Any]]):
    """Run blocking functions in at most ``threads`` worker threads, batching them.

    When many tasks do file I/O at once (an invocation advancing thousands of runs), the hop to
    a worker thread and back costs more than a small read or write. Callers queue their call;
    up to ``threads`` of them become leaders, each taking the queued calls in batches of up to
    ``batch`` per hop, until the queue is empty. Each caller gets its own result or exception.
    """

    def __init__(self, threads: int, batch: int = 32) -> None:
        super().__init__(threads, batch)

    def _work(self, entries: list[_Job[Any]]) -> None:
        _run_all(entries)

    async def run(self, fn: Callable[[], T]) -> T:
        job: _Job[T] = _Job(fn)
        await self._submit(job)
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]  # set when error is None


ItemT = TypeVar("ItemT")


class _Item(Generic[ItemT, T]):
    __slots__ = ("item", "outcome")

    def __init__(self, item: ItemT) -> None:
        self.item = item
        self.outcome: T | BaseException | None = None


class GroupRunner(_Leaders[_Item[ItemT, T]]):
    """Hand queued items to one blocking function in groups, in at most ``threads`` worker
    threads at once: ``process(items)`` returns, in order, each item's result or the
    exception to raise to its caller.

    For work that costs less done for many at once (the file backend makes a group of
    writes durable with one ``syncfs``).
    """

    def __init__(
        self,
        process: Callable[[list[ItemT]], list[T | BaseException]],
        threads: int,
        group: int = 256,
    ) -> None:
        super().__init__(threads, group)
        self._process = process

    def _work(self, entries: list[_Item[ItemT, T]]) -> None:
        try:
            outcomes = self._process([queued.item for queued in entries])
        except BaseException as exc:  # handed to every caller of the group
            outcomes = [exc] * len(entries)
        for queued, outcome in zip(entries, outcomes, strict=True):
            queued.outcome = outcome

    async def run(self, item: ItemT) -> T:
        queued: _Item[ItemT, T] = _Item(item)
        await self._submit(queued)
        if isinstance(queued.outcome, BaseException):
            raise queued.outcome
        return queued.outcome  # type: ignore[return-value]  # set by the group's run
