"""The batching of blocking calls into worker threads (used by the file backend)."""

from __future__ import annotations

import threading

import anyio
import pytest

from asyncflow._backends._threads import GroupRunner, ThreadBatcher

pytestmark = pytest.mark.anyio


async def test_each_caller_gets_its_own_result_or_error() -> None:
    batcher = ThreadBatcher(threads=3, batch=4)
    results: dict[int, object] = {}
    threads: set[int] = set()

    def work(i: int) -> int:
        threads.add(threading.get_ident())
        if i % 7 == 0:
            raise ValueError(f"bad {i}")
        return i * i

    async def call(i: int) -> None:
        try:
            results[i] = await batcher.run(lambda: work(i))
        except ValueError as exc:
            results[i] = str(exc)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(call, i)
    assert results == {i: f"bad {i}" if i % 7 == 0 else i * i for i in range(50)}
    assert threading.get_ident() not in threads, "the calls ran in worker threads"


async def test_a_cancelled_caller_still_has_its_call_completed() -> None:
    batcher = ThreadBatcher(threads=1)
    gate = threading.Event()
    done: list[str] = []

    def blocking() -> None:
        gate.wait(10)
        done.append("ran")

    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run, blocking)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()  # the caller is cancelled while its call is in the thread
        gate.set()
    assert done == ["ran"], "once queued, a call runs to the end, as with anyio.to_thread"


async def test_cancelling_a_leader_does_not_strand_the_calls_it_took_on() -> None:
    batcher = ThreadBatcher(threads=1)
    gate = threading.Event()
    got: list[str] = []

    def first() -> str:
        gate.wait(10)
        return "first"

    async def second_caller() -> None:
        got.append(await batcher.run(lambda: "second"))

    async with anyio.create_task_group() as outer, anyio.create_task_group() as leader:
        leader.start_soon(batcher.run, first)  # becomes the only leader
        await anyio.wait_all_tasks_blocked()
        outer.start_soon(second_caller)  # queued behind it, served by that leader
        await anyio.wait_all_tasks_blocked()
        leader.cancel_scope.cancel()
        gate.set()
    assert got == ["second"]


async def test_grouped_items_each_get_their_own_outcome() -> None:
    groups: list[list[int]] = []

    def process(items: list[int]) -> list[int | BaseException]:
        assert threading.get_ident() != loop_thread, "groups run in worker threads"
        groups.append(items)
        return [ValueError(f"bad {i}") if i % 5 == 0 else i * 10 for i in items]

    loop_thread = threading.get_ident()
    runner: GroupRunner[int, int] = GroupRunner(process, threads=2, group=8)
    results: dict[int, object] = {}

    async def call(i: int) -> None:
        try:
            results[i] = await runner.run(i)
        except ValueError as exc:
            results[i] = str(exc)

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(call, i)
    assert results == {i: f"bad {i}" if i % 5 == 0 else i * 10 for i in range(40)}
    assert sorted(i for g in groups for i in g) == list(range(40)), "each item once"
    assert max(len(g) for g in groups) > 1, "items queued meanwhile share a group"
    assert all(len(g) <= 8 for g in groups)


async def test_a_failing_group_fails_each_of_its_callers() -> None:
    def process(items: list[int]) -> list[int | BaseException]:
        raise OSError("disk gone")

    runner: GroupRunner[int, int] = GroupRunner(process, threads=1)
    with pytest.raises(OSError, match="disk gone"):
        await runner.run(1)
