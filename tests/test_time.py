"""Durable time: c.sleep, c.sleep_until, flow.next_wakeup; and the recorded c.now, c.random,
c.uuid. Driven by a MockClock: nothing here waits for real time."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import asyncflow
from asyncflow import Backend, Context, Entry, Key
from asyncflow.testing import MockClock

MakeFlow = Callable[..., asyncflow.Flow]


class Spy(Backend):
    """A real backend that notes which run records were read or claimed."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.touched: list[Key] = []

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def packs_runs(self) -> bool:  # type: ignore[override]
        return self.inner.packs_runs

    async def read(self, key: Key) -> Entry | None:
        self.touched.append(key)
        return await self.inner.read(key)

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        self.touched += keys
        return await self.inner.read_many(keys)

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        return await self.inner.write(key, data, if_version=if_version, if_absent=if_absent)

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        await self.inner.delete(key, if_version=if_version)

    async def list(self, namespace: str) -> dict[str, str]:
        return await self.inner.list(namespace)

    def claim(self, key: Key) -> AbstractAsyncContextManager[bool]:
        self.touched.append(key)
        return self.inner.claim(key)

    def run_keys(self) -> list[Key]:
        return [k for k in self.touched if k[0] in ("active", "finished")]


def reminder(flow: asyncflow.Flow, replays: list[str]) -> None:
    @flow.workflow()
    async def remind(c: Context, args: dict[str, Any]) -> str:
        replays.append(c.run_id)
        await c.log("set")
        await c.sleep(args["seconds"])
        await c.log("ring")
        return "done"


@pytest.mark.anyio
async def test_sleep_skips_the_run_unread_until_the_deadline(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    replays: list[str] = []
    first = make_flow()
    reminder(first, replays)
    [run] = await first.run("remind", {"seconds": 3600})
    assert (run.status, run.logs) == ("paused", ["set"])
    assert await first.next_wakeup() == datetime.fromtimestamp(clock() + 3600, timezone.utc)
    shown = await first.get_run(run.run_id)
    assert (shown.wake_at, shown.wait_event) == (clock() + 3600, None)

    # Each invocation is a new script process: a new flow on the same storage.
    clock.advance(3599)
    before = make_flow()
    reminder(before, replays)
    spy = Spy(before.backend)
    before.backend = spy
    assert await before.run() == []
    assert spy.run_keys() == [], "a sleeping run is neither claimed nor read"
    assert replays == [run.run_id]

    clock.advance(1)
    after = make_flow()
    reminder(after, replays)
    [done] = await after.run()
    assert (done.run_id, done.status, done.result) == (run.run_id, "succeeded", "done")
    assert done.logs == ["set", "ring"]
    assert await after.next_wakeup() is None


@pytest.mark.anyio
async def test_sleep_until_a_time_and_zero_sleep(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()
    deadline = datetime.fromtimestamp(clock() + 90, timezone.utc)

    @flow.workflow()
    async def meet(c: Context) -> None:
        await c.sleep(0)  # a deadline already passed does not suspend
        await c.log("before")
        await c.sleep_until(deadline)
        await c.log("after")

    [run] = await flow.run("meet")
    assert (run.status, run.logs) == ("paused", ["before"])
    assert await flow.next_wakeup() == deadline
    clock.advance(100)
    [run] = await flow.run()
    assert (run.status, run.logs) == ("succeeded", ["before", "after"])
    steps = (await flow.get_run(run.run_id)).steps
    assert [(s.kind, s.done) for s in steps if s.kind == "sleep"] == [("sleep", True)] * 2


@pytest.mark.anyio
async def test_next_wakeup_is_the_earliest_timer(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()
    reminder(flow, [])
    assert await flow.next_wakeup() is None
    await flow.run("remind", {"seconds": 600})
    await flow.run("remind", {"seconds": 60})
    await flow.run("remind", {"seconds": 6000})
    assert await flow.next_wakeup() == datetime.fromtimestamp(clock() + 60, timezone.utc)
    clock.advance(61)
    [woke] = await flow.run()
    assert woke.status == "succeeded"
    assert await flow.next_wakeup() == datetime.fromtimestamp(clock() - 61 + 600, timezone.utc)


@pytest.mark.anyio
async def test_a_lost_index_entry_is_written_again_without_replaying(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    replays: list[str] = []
    flow = make_flow()
    reminder(flow, replays)
    [run] = await flow.run("remind", {"seconds": 60})
    async with flow:
        [name] = await flow.backend.list("waits")
        await flow.backend.delete(("waits", name))  # as a crash between two writes would
    assert await flow.run() == []
    assert replays == [run.run_id], "the record said it sleeps: not replayed"
    assert await flow.next_wakeup() is not None
    clock.advance(60)
    [done] = await flow.run()
    assert done.status == "succeeded"


@pytest.mark.anyio
async def test_bad_sleeps_are_usage_errors(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger="negative")
    async def negative(c: Context) -> None:
        await c.sleep(-1)

    @flow.workflow(trigger="naive")
    async def naive(c: Context) -> None:
        await c.sleep_until(datetime(2030, 1, 1))

    @flow.workflow(trigger="nan")
    async def nan(c: Context) -> None:
        await c.sleep(float("nan"))

    for trigger, mention in [("negative", "-1"), ("naive", "timezone-aware"), ("nan", "nan")]:
        [run] = await flow.run(trigger)
        assert run.status == "failed"
        assert run.error is not None
        assert run.error.startswith("UsageError")
        assert mention in run.error


@pytest.mark.anyio
async def test_now_random_and_uuid_are_recorded_once(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    seen: list[tuple[datetime, float, uuid.UUID]] = []

    def script() -> asyncflow.Flow:
        flow = make_flow()

        @flow.workflow()
        async def draw(c: Context) -> str:
            seen.append((await c.now(), await c.random(), await c.uuid()))
            await c.pause_once()
            return str(seen[-1][2])

        return flow

    [run] = await script().run("draw")
    clock.advance(500)
    [run] = await script().run()
    assert run.status == "succeeded"
    assert seen[0] == seen[1], "replay returns what the first execution got"
    when, chance, ident = seen[0]
    assert when == datetime.fromtimestamp(clock() - 500, timezone.utc)
    assert 0 <= chance < 1
    assert (ident.version, run.result) == (4, str(ident))
    assert when.tzinfo is not None
    assert when + timedelta(seconds=500) == datetime.fromtimestamp(clock(), timezone.utc)


@pytest.mark.anyio
async def test_an_index_entry_left_behind_by_a_crash_is_dropped(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    flow = make_flow()
    reminder(flow, [])
    await flow.run("remind", {"seconds": 60})
    async with flow:
        [name] = await flow.backend.list("waits")
    clock.advance(60)
    [done] = await flow.run()
    assert done.status == "succeeded"
    async with flow:
        # As if the run had finished but its entry's deletion had been lost to a crash.
        await flow.backend.write(("waits", name), b"{}")
    assert await flow.next_wakeup() is not None
    assert await flow.run() == []
    assert await flow.next_wakeup() is None
