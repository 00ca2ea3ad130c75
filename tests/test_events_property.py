"""Property-based (hypothesis): random workflows of side effects and event waits, random
interleavings of starts, invocations and emits (an emit can land between any two writes of an
invocation), and a crash at a random write (before or after it is stored), then a fresh flow
resumes. Whatever the schedule:

- no event is lost: once one clean invocation has run, no run still waits for an event that
  an emit which completed after the wait began sent;
- each wait received one event, emitted after it began, sent to it, and no event twice;
- the runs then finish, and replay to the results their journals imply;
- no side effect executes twice but where a crash interrupted it (at most one per crash).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asyncflow
from asyncflow import Context, _record

pytestmark = pytest.mark.slow

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

EVENTS = ("a", "b")


class Crash(BaseException):
    """The process stops dead here."""


class Faulty(asyncflow.Backend):
    """A real backend whose ``crash_at``-th write or delete raises :class:`Crash` (before or
    after it is stored), and whose ``inject_at``-th awaits ``inject()`` first (another
    process's action, interleaved there)."""

    @property
    def leased_claims(self) -> bool:  # type: ignore[override]
        return self.inner.leased_claims  # claims are the wrapped backend's

    def __init__(
        self,
        inner: asyncflow.Backend,
        crash_at: int | None,
        crash_after: bool,
        inject_at: int | None = None,
        inject: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.inner = inner
        self.count = 0
        self.crash_at, self.crash_after = crash_at, crash_after
        self.inject_at, self.inject = inject_at, inject

    async def _mutate(self, do: Callable[[], Awaitable[Any]]) -> Any:
        self.count += 1
        if self.count == self.inject_at and self.inject is not None:
            await self.inject()
        if self.count == self.crash_at and not self.crash_after:
            raise Crash
        result = await do()
        if self.count == self.crash_at:
            raise Crash
        return result

    async def read(self, key: asyncflow.Key) -> asyncflow.Entry | None:
        return await self.inner.read(key)

    async def read_many(self, keys: Sequence[asyncflow.Key]) -> list[asyncflow.Entry | None]:
        return await self.inner.read_many(keys)

    async def write(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        result: str = await self._mutate(lambda: self.inner.write(key, data, **conditions))
        return result

    async def write_and_release(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        result: str = await self._mutate(
            lambda: self.inner.write_and_release(key, data, **conditions)
        )
        return result

    async def delete(self, key: asyncflow.Key, **conditions: Any) -> None:
        await self._mutate(lambda: self.inner.delete(key, **conditions))

    async def list(self, namespace: str) -> dict[str, str]:
        return await self.inner.list(namespace)

    def claim(self, key: asyncflow.Key) -> AbstractAsyncContextManager[bool]:
        return self.inner.claim(key)

    def claim_read(
        self, keys: Sequence[asyncflow.Key], versions: Sequence[str]
    ) -> AbstractAsyncContextManager[list[asyncflow.Entry | None]]:
        return self.inner.claim_read(keys, versions)


class IdClock:
    """Run and event ids from a clock that moves one millisecond at each id: every id has a
    millisecond of its own, so "emitted after the wait began" is decided by the schedule."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def time_ns(self) -> int:
        self.ms += 1
        return self.ms * 1_000_000


@dataclass
class World:
    backend: asyncflow.Backend
    ids: IdClock
    executed: Counter[tuple[str, int]] = field(default_factory=Counter)
    emits: list[tuple[str, int, int]] = field(default_factory=list)  # name, value, ms before
    sent: set[tuple[str, int]] = field(default_factory=set)  # (completed or not)
    crashes: int = 0
    value: int = 0

    def flow(self, backend: asyncflow.Backend | None = None) -> asyncflow.Flow:
        flow = asyncflow.setup(backend or self.backend)
        executed = self.executed

        @flow.sideeffect()
        async def effect(c: Context, position: int) -> int:
            executed[(c.run_id, position)] += 1
            return position * 10

        @flow.workflow()
        async def prog(c: Context, ops: list[str]) -> list[Any]:
            out: list[Any] = []
            for position, op in enumerate(ops):
                if op == "effect":
                    out.append(await effect(c, position))
                else:
                    out.append(await c.wait_event(op))
            return out

        return flow

    async def emit(self, name: str, backend: asyncflow.Backend | None = None) -> None:
        self.value += 1
        value, before = self.value, self.ids.ms
        self.sent.add((name, value))
        await self.flow(backend).emit(name, value)
        self.emits.append((name, value, before))  # completed


ops_strategy = st.lists(st.sampled_from(["effect", *EVENTS]), min_size=1, max_size=4)
action = st.one_of(
    st.tuples(st.just("start"), ops_strategy),
    st.tuples(st.just("invoke"), st.none()),
    st.tuples(st.just("emit"), st.sampled_from(EVENTS)),
)
step = st.tuples(
    action,
    st.one_of(st.none(), st.integers(1, 12)),  # crash at this write
    st.booleans(),  # after the write is stored
    st.one_of(st.none(), st.integers(1, 12)),  # another process's emit before this write
    st.sampled_from(EVENTS),  # (of this event)
)


async def scenario(backend: asyncflow.Backend, schedule: list[Any]) -> None:
    saved = list(_record._last_id)
    ids = IdClock(max(saved[0], time.time_ns() // 1_000_000) + 1000)
    real_time = _record.time
    _record.time = ids  # type: ignore[assignment]
    try:
        await play(World(backend, ids), schedule)
    finally:
        _record.time = real_time
        _record._last_id[:] = saved


async def play(world: World, schedule: list[Any]) -> None:
    for (kind, arg), crash_at, after, inject_at, interleaved in schedule:

        async def inject(name: str = interleaved) -> None:
            await world.emit(name, world.backend)

        faulty = Faulty(world.backend, crash_at, after, inject_at, inject)
        try:
            if kind == "start":
                await world.flow(faulty).run("prog", arg)
            elif kind == "invoke":
                await world.flow(faulty).run()
            else:
                await world.emit(arg, faulty)
        except BaseException as exc:
            if not crashed(exc):
                raise
            world.crashes += 1
    flow = world.flow()
    await flow.run()  # one clean invocation
    for run in await records(world.backend):
        for wait in pending(run):
            since_ms = int(wait["since"][:11], 16)
            owed = [e for e in world.emits if e[0] == wait["name"] and e[2] > since_ms]
            assert not owed, f"run {run['run_id']} still waits for {wait['name']}: {owed} lost"
    # Settle: emit to every waiting run until all finish.
    for _ in range(10):
        waiting = {w["name"] for r in await records(world.backend) for w in pending(r)}
        if not waiting:
            break
        for name in sorted(waiting):
            await world.emit(name)
    runs = await records(world.backend)
    assert all(r["status"] == "succeeded" for r in runs), [
        (r["run_id"], r["status"]) for r in runs
    ]
    for run in runs:
        waits = [s for s in run["steps"] if s["kind"] == "wait_event"]
        expected: list[Any] = []
        for position, op in enumerate(run["args"]):
            if op == "effect":
                expected.append(position * 10)
                count = world.executed[(run["run_id"], position)]
                assert 1 <= count <= 1 + world.crashes, (run["run_id"], position, count)
            else:
                wait = waits.pop(0)
                assert wait["name"] == op
                assert (op, wait["value"]) in world.sent, "an event nobody sent to it"
                assert wait["event"] > wait["since"], "an event emitted before the wait"
                expected.append(wait["value"])
        assert run["result"] == expected, "the journal replays to another result"
        values = [(s["name"], s["value"]) for s in run["steps"] if s["kind"] == "wait_event"]
        assert len(values) == len(set(values)), "one event received twice"


async def records(backend: asyncflow.Backend) -> list[dict[str, Any]]:
    """Every run record as stored (active and finished)."""
    out = []
    for namespace in ("active", "finished"):
        keys = [(namespace, name) for name in await backend.list(namespace)]
        out += [json.loads(e.data) for e in await backend.read_many(keys) if e is not None]
    return out


def pending(run: dict[str, Any]) -> list[dict[str, Any]]:
    if run["status"] not in ("pending", "paused"):
        return []
    return [
        s
        for s in run["steps"]
        if s["kind"] == "wait_event" and "event" not in s and not s.get("timed_out")
    ]


def crashed(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(crashed(e) for e in exc.exceptions)
    return isinstance(exc, Crash)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=st.lists(step, min_size=1, max_size=8))
def test_random_schedules_with_crashes_lose_no_event_and_replay_the_same(
    loop: str, schedule: list[Any]
) -> None:
    anyio.run(scenario, asyncflow.MemoryBackend(), schedule, backend=loop)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=st.lists(step, min_size=1, max_size=6))
def test_random_schedules_on_the_file_backend(loop: str, schedule: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        anyio.run(scenario, asyncflow.FileBackend(folder), schedule, backend=loop)
