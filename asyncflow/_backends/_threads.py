"""Blocking calls run in worker threads, many per thread hop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread

__all__ = ["GroupRunner", "ThreadBatcher"]

T = TypeVar("T")


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def _run_all(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        try:
            job.value = job.fn()
        except BaseException as exc:  # handed to the job's caller, who re-raises it
            job.error = exc


class ThreadBatcher:
    """Run blocking functions in at most ``threads`` worker threads, batching them.

    When many tasks do file I/O at once (an invocation advancing thousands of runs), the hop to
    a worker thread and back costs more than a small read or write. Callers queue their call;
    up to ``threads`` of them become leaders, each taking the queued calls in batches of up to
    ``batch`` per hop, until the queue is empty. Each caller gets its own result or exception.
    """

    def __init__(self, threads: int, batch: int = 32) -> None:
        self._max_leaders = threads
        self._batch = batch
        self._leaders = 0
        self._queue: list[_Job[Any]] = []

    async def run(self, fn: Callable[[], T]) -> T:
        job: _Job[T] = _Job(fn)
        self._queue.append(job)
        # Shielded: once queued the call runs, as with anyio.to_thread; a leader cancelled
        # half-way would leave the callers of its batch waiting for ever.
        with anyio.CancelScope(shield=True):
            if self._leaders < self._max_leaders:
                self._leaders += 1
                try:
                    while self._queue:
                        batch = self._queue[: self._batch]
                        del self._queue[: self._batch]
                        try:
                            await anyio.to_thread.run_sync(_run_all, batch)
                        finally:
                            for queued in batch:
                                queued.done.set()
                finally:
                    self._leaders -= 1
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[return-value]  # set when error is None


ItemT = TypeVar("ItemT")


class _Item(Generic[ItemT, T]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: ItemT) -> None:
        self.item = item
        self.done = anyio.Event()
        self.outcome: T | BaseException | None = None


class GroupRunner(Generic[ItemT, T]):
    """Hand queued items to one blocking function in groups, in at most ``threads`` worker
    threads at once: ``process(items)`` returns, in order, each item's result or the
    exception to raise to its caller.

    For work that costs less done for many at once (the file backend makes a group of
    writes durable with one ``syncfs``). Leaders as in :class:`ThreadBatcher`.
    """

    def __init__(
        self,
        process: Callable[[list[ItemT]], list[T | BaseException]],
        threads: int,
        group: int = 256,
    ) -> None:
        self._process = process
        self._max_leaders = threads
        self._group = group
        self._leaders = 0
        self._queue: list[_Item[ItemT, T]] = []

    def _run_group(self, group: list[_Item[ItemT, T]]) -> None:
        try:
            outcomes = self._process([queued.item for queued in group])
        except BaseException as exc:  # handed to every caller of the group
            outcomes = [exc] * len(group)
        for queued, outcome in zip(group, outcomes, strict=True):
            queued.outcome = outcome

    async def run(self, item: ItemT) -> T:
        queued: _Item[ItemT, T] = _Item(item)
        self._queue.append(queued)
        # Shielded, as ThreadBatcher.run: once queued, the item is processed.
        with anyio.CancelScope(shield=True):
            if self._leaders < self._max_leaders:
                self._leaders += 1
                try:
                    while self._queue:
                        group = self._queue[: self._group]
                        del self._queue[: self._group]
                        try:
                            await anyio.to_thread.run_sync(self._run_group, group)
                        finally:
                            for one in group:
                                one.done.set()
                finally:
                    self._leaders -= 1
            await queued.done.wait()
        if isinstance(queued.outcome, BaseException):
            raise queued.outcome
        return queued.outcome  # type: ignore[return-value]  # set by the group's run
