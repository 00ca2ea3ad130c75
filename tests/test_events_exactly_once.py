"""Events exactly once (issue 9): an event emitted after ``c.wait_event`` began reaches that run
once, whatever the timing and wherever a process stops; the wait index never strands a run.

Each test stops a real store's traffic at the moment that mattered, through a wrapper
(:class:`Hooked`) that runs a test's code just after a given write or just before a given
delete, or raises :class:`Crash` there as a process killed at that point would stop.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import asyncflow
from asyncflow import Context
from asyncflow.testing import MockClock

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = pytest.mark.anyio

Hook = Callable[[asyncflow.Key, bytes | None], Awaitable[None]]


class Crash(BaseException):
    """A process stopping dead at this point (a BaseException: nothing in asyncflow may
    record it as a run's outcome, as nothing could record a kill -9)."""


def crashed(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(crashed(e) for e in exc.exceptions)
    return isinstance(exc, Crash)


class Hooked(asyncflow.Backend):
    """A real backend that awaits ``before_write(key, data)`` before each write is sent,
    ``after_write(key, data)`` once it is stored, and ``before_delete(key, None)`` before each
    delete is sent."""

    @property
    def leased_claims(self) -> bool:  # type: ignore[override]
        return self.inner.leased_claims  # claims are the wrapped backend's

    def __init__(
        self,
        inner: asyncflow.Backend,
        *,
        before_write: Hook | None = None,
        after_write: Hook | None = None,
        before_delete: Hook | None = None,
    ) -> None:
        self.inner = inner
        self.before_write = before_write
        self.after_write = after_write
        self.before_delete = before_delete

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def read(self, key: asyncflow.Key) -> asyncflow.Entry | None:
        return await self.inner.read(key)

    async def read_many(self, keys: Sequence[asyncflow.Key]) -> list[asyncflow.Entry | None]:
        return await self.inner.read_many(keys)

    async def write(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        if self.before_write is not None:
            await self.before_write(key, data)
        version = await self.inner.write(key, data, **conditions)
        if self.after_write is not None:
            await self.after_write(key, data)
        return version

    async def write_and_release(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        if self.before_write is not None:
            await self.before_write(key, data)
        version = await self.inner.write_and_release(key, data, **conditions)
        if self.after_write is not None:
            await self.after_write(key, data)
        return version

    async def delete(self, key: asyncflow.Key, **conditions: Any) -> None:
        if self.before_delete is not None:
            await self.before_delete(key, None)
        await self.inner.delete(key, **conditions)

    async def list(self, namespace: str) -> dict[str, str]:
        return await self.inner.list(namespace)

    def claim(self, key: asyncflow.Key) -> AbstractAsyncContextManager[bool]:
        return self.inner.claim(key)

    def claim_read(
        self, keys: Sequence[asyncflow.Key], versions: Sequence[str]
    ) -> AbstractAsyncContextManager[list[asyncflow.Entry | None]]:
        return self.inner.claim_read(keys, versions)

    def locate(self, key: asyncflow.Key) -> str:
        return self.inner.locate(key)


class Store:
    """One store of each kind, and fresh backend objects on it (as separate processes would
    have; the memory store is one object, shared)."""

    def __init__(self, kind: str, tmp_path: Path, aws: Aws | None) -> None:
        self.kind = kind
        self.memory = asyncflow.MemoryBackend()
        self.folder = tmp_path / "store"
        self.aws = aws
        self.where = ""
        if aws is not None:
            self.where = aws.new_bucket() if kind == "s3" else aws.new_table()

    async def list(self, namespace: str) -> dict[str, str]:
        backend = self.make()
        await backend.open()
        try:
            return await backend.list(namespace)
        finally:
            await backend.aclose()

    def make(self) -> asyncflow.Backend:
        if self.kind == "memory":
            return self.memory
        if self.kind == "file":
            return asyncflow.FileBackend(self.folder)
        assert self.aws is not None
        if self.kind == "s3":
            return asyncflow.S3Backend(self.where, "flows", endpoint_url=self.aws.endpoint)
        return asyncflow.DynamoDBBackend(self.where, endpoint_url=self.aws.endpoint)


@pytest.fixture(
    params=[
        "memory",
        "file",
        *(pytest.param(k, marks=pytest.mark.aws) for k in ("s3", "dynamodb")),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    aws = request.getfixturevalue("aws") if request.param in ("s3", "dynamodb") else None
    return Store(str(request.param), tmp_path, aws)


def script(backend: asyncflow.Backend) -> asyncflow.Flow:
    """The script every process of these tests runs: a run that waits for ``go`` and
    returns its args."""
    flow = asyncflow.setup(backend)

    @flow.workflow()
    async def wait(c: Context) -> Any:
        return await c.wait_event("go")

    return flow


def waits_for_go(key: asyncflow.Key, data: bytes | None) -> bool:
    """Whether this write stores a run record that waits for ``go``."""
    return key[0] == "active" and data is not None and json.loads(data)["wait_event"] == "go"


async def finished_once(store: Store, run_id: str, results: list[asyncflow.RunResult]) -> Any:
    """The run's result, once checked that it finished exactly once among ``results``."""
    run = await script(store.make()).get_run(run_id)
    assert run.status == "succeeded", f"the run was left {run.status}"
    finished = [r for r in results if r.run_id == run_id and r.status == "succeeded"]
    assert len(finished) == 1, "it finished once"
    return run.result


async def test_an_event_emitted_while_the_wait_is_being_recorded_reaches_the_run(
    store: Store,
) -> None:
    # The invoker has stored the record that says "waiting for go", not yet its index entry:
    # an emitter listing the index now finds nobody.
    stored, go_on = anyio.Event(), anyio.Event()

    async def pause(key: asyncflow.Key, data: bytes | None) -> None:
        if waits_for_go(key, data) and not stored.is_set():
            stored.set()
            await go_on.wait()

    results: list[asyncflow.RunResult] = []

    async def invoke() -> None:
        results.extend(await script(Hooked(store.make(), after_write=pause)).run("wait"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke)
        await stored.wait()
        results.extend(await script(store.make()).emit("go", 42))
        go_on.set()
    [run_id] = {r.run_id for r in results}
    results += await script(store.make()).run()  # the next invocation
    assert await finished_once(store, run_id, results) == 42


async def test_an_emitter_killed_before_dropping_the_index_entry_strands_no_run(
    store: Store,
) -> None:
    [paused] = await script(store.make()).run("wait")
    assert paused.status == "paused"

    # The emitter has stored the woken record and dies before deleting the run's entry.
    async def kill(key: asyncflow.Key, data: bytes | None) -> None:
        if key[0] == "waits":
            raise Crash

    with pytest.raises(BaseException) as died:  # noqa: PT011  (checked below)
        await script(Hooked(store.make(), before_delete=kill)).emit("go", 7)
    assert crashed(died.value)
    results = await script(store.make()).run()  # the next invocation repairs the index
    assert await finished_once(store, paused.run_id, results) == 7
    # The index no longer calls it waiting, and the same event name again wakes nothing.
    assert await script(store.make()).emit("go", 8) == []
    assert await store.list("waits") == {}


async def test_an_invoker_killed_between_the_record_and_its_index_entry_loses_no_event(
    store: Store,
) -> None:
    async def kill(key: asyncflow.Key, data: bytes | None) -> None:
        if key[0] == "waits":
            raise Crash

    with pytest.raises(BaseException) as died:  # noqa: PT011  (checked below)
        await script(Hooked(store.make(), before_write=kill)).run("wait")
    assert crashed(died.value)
    [run_id] = await store.list("active")
    assert await store.list("waits") == {}  # the record says waiting; no entry
    # The emitter finds nobody in the index; its invocation reads the run and hands it the
    # event from the log.
    results = await script(store.make()).emit("go", 9)
    assert await finished_once(store, run_id, results) == 9


async def test_an_emitter_killed_after_logging_the_event_still_delivers_it(
    store: Store,
) -> None:
    [paused] = await script(store.make()).run("wait")

    async def kill(key: asyncflow.Key, data: bytes | None) -> None:
        if key[0] == "events":
            raise Crash  # logged; the waiting run not woken yet

    with pytest.raises(BaseException) as died:  # noqa: PT011  (checked below)
        await script(Hooked(store.make(), after_write=kill)).emit("go", 5)
    assert crashed(died.value)
    results = await script(store.make()).run()
    assert await finished_once(store, paused.run_id, results) == 5


async def test_an_event_emitted_before_the_wait_began_is_not_received(store: Store) -> None:
    flow = script(store.make())
    assert await flow.emit("go", 1) == []
    [paused] = await flow.run("wait")
    assert await flow.run() == []  # the logged event is older than the wait
    [done] = await flow.emit("go", 2)
    assert (done.run_id, done.result) == (paused.run_id, 2)


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_branches_waiting_for_one_event_take_it_in_turn(store: Store) -> None:
    flow = asyncflow.setup(store.make())

    @flow.workflow()
    async def two(c: Context) -> Any:
        async def early(c: Context) -> Any:
            return await c.wait_event("go")

        async def late(c: Context) -> Any:
            await c.pause_once()
            return await c.wait_event("go")

        return await c.gather(early, late)

    [paused] = await flow.run("two")  # `early` waits; `late` pauses
    [paused] = await flow.run()  # both wait now, `late` since later
    assert paused.status == "paused"
    [paused] = await flow.emit("go", "first")  # the earlier wait takes it
    assert paused.status == "paused"
    [done] = await flow.emit("go", "second")
    assert done.result == ["first", "second"]


async def test_the_event_log_is_pruned_after_its_retention(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = script(store.make())
    await flow.emit("go", 1)
    [logged] = await store.list("events")
    assert await flow.run() == []
    assert list(await store.list("events")) == [logged]  # kept for late waits
    from asyncflow import _waits

    monkeypatch.setattr(_waits, "EVENT_LOG_RETENTION", -60.0)
    assert await flow.run() == []
    assert await store.list("events") == {}


@pytest.mark.parametrize("store", ["memory", "file"], indirect=True)
async def test_an_event_its_emitter_missed_beats_a_timeout_that_passed_since(
    store: Store,
) -> None:
    clock = MockClock()

    def timed(backend: asyncflow.Backend) -> asyncflow.Flow:
        flow = asyncflow.setup(backend, clock=clock)

        @flow.workflow()
        async def wait(c: Context) -> Any:
            try:
                return await c.wait_event("go", timeout=10)
            except asyncflow.WaitTimeout:
                return "timed out"

        return flow

    stored, go_on = anyio.Event(), anyio.Event()

    async def pause(key: asyncflow.Key, data: bytes | None) -> None:
        if waits_for_go(key, data) and not stored.is_set():
            stored.set()
            await go_on.wait()

    results: list[asyncflow.RunResult] = []

    async def invoke() -> None:
        results.extend(await timed(Hooked(store.make(), after_write=pause)).run("wait"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke)
        await stored.wait()
        await timed(store.make())._deliver("go", 42)  # emitted before the timeout; nobody found
        go_on.set()
    [run_id] = {r.run_id for r in results}
    clock.advance(60)  # the next invocation comes after the timeout
    results += await timed(store.make()).run()
    assert await finished_once(store, run_id, results) == 42
