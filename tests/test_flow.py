"""setup(), registration, invocations and inspection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncflow
from asyncflow import Context

MakeFlow = Callable[..., asyncflow.Flow]


# -- setup -------------------------------------------------------------------------------------


def test_setup_defaults_to_a_folder_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ASYNCFLOW_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    backend = asyncflow.setup().backend
    assert isinstance(backend, asyncflow.FileBackend)
    assert backend.folder.resolve() == (tmp_path / ".asyncflow").resolve()


def test_setup_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCFLOW_BACKEND", "memory:")
    assert isinstance(asyncflow.setup().backend, asyncflow.MemoryBackend)


def test_setup_accepts_a_backend_instance() -> None:
    backend = asyncflow.MemoryBackend()
    assert asyncflow.setup(backend).backend is backend


@pytest.mark.parametrize("bad", ["", "memory", "file:", "redis://x", "s4://b", "C:/folder"])
def test_setup_rejects_unknown_backends(bad: str) -> None:
    with pytest.raises(asyncflow.ConfigError, match="'file:<folder>'") as info:
        asyncflow.setup(bad)
    assert repr(bad) in str(info.value), "the message names what was given"


def test_setup_rejects_other_types_and_bad_concurrency() -> None:
    with pytest.raises(asyncflow.ConfigError):
        asyncflow.setup(42)  # type: ignore[arg-type]
    with pytest.raises(asyncflow.ConfigError, match="max_concurrency"):
        asyncflow.setup("memory:", max_concurrency=0)


# -- registration ------------------------------------------------------------------------------


def test_workflow_registration_errors() -> None:
    flow = asyncflow.setup("memory:")

    @flow.workflow()
    async def twice(c: Context) -> None: ...

    with pytest.raises(asyncflow.UsageError, match="already registered"):

        @flow.workflow(trigger="other")
        async def twice(c: Context) -> None: ...

    with pytest.raises(asyncflow.UsageError, match="async def"):

        @flow.workflow()
        def sync(c: Context) -> None: ...

    with pytest.raises(asyncflow.UsageError, match=r"\(c\) or \(c, args\)"):

        @flow.workflow()
        async def three(c: Context, a: int, b: int) -> None: ...

    with pytest.raises(asyncflow.UsageError, match="parentheses"):

        @flow.workflow  # type: ignore[arg-type]
        async def bare(c: Context) -> None: ...

    assert flow.workflows == {"twice": "twice"}


# -- invocations -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_trigger_changes_nothing(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def known(c: Context) -> None:
        await c.pause_once()

    await flow.run("known")
    before = await flow.list_runs()
    with pytest.raises(asyncflow.UnknownTriggerError, match=r"'nope'.*'known'"):
        await flow.run("nope")
    with pytest.raises(asyncflow.UnknownTriggerError):
        await flow.start("nope")
    assert await flow.list_runs() == before, "the paused run was not resumed"


@pytest.mark.anyio
async def test_unstorable_args_change_nothing(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context, args: Any) -> None: ...

    with pytest.raises(asyncflow.SerializationError, match="'wf'"):
        await flow.run("wf", {"when": object()})
    assert await flow.list_runs() == []


@pytest.mark.anyio
async def test_shared_trigger_gives_each_workflow_a_run(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger="order")
    async def bill(c: Context, args: int) -> int:
        return args * 2

    @flow.workflow(trigger="order")
    async def ship(c: Context, args: int) -> int:
        return args * 3

    results = await flow.run("order", 5)
    assert [(r.workflow, r.status, r.result) for r in results] == [
        ("bill", "succeeded", 10),
        ("ship", "succeeded", 15),
    ]
    assert len({r.run_id for r in results}) == 2


@pytest.mark.anyio
async def test_results_list_new_runs_first_then_resumed_oldest_first(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context, args: int) -> int:
        await c.pause_once()
        return args

    started = [(await flow.start("wf", i))[0] for i in range(3)]
    results = await flow.run("wf", 7)
    assert results[0].run_id not in started, "the new run comes first"
    assert [r.status for r in results] == ["paused"] * 4
    resumed = [r.run_id for r in results[1:]]
    again = [r.result for r in await flow.run()]
    if not isinstance(flow.backend, asyncflow.PackedBackend):
        assert resumed == started, "resumed runs come oldest first"
        assert again == [0, 1, 2, 7]
        return
    # Packed: the runs of one pack side by side, the pack of the oldest run first, and oldest
    # first within each pack.
    packs = [flow.backend.affinity(("active", run_id)) for run_id in started]
    rank = {pack: packs.index(pack) for pack in packs}
    assert resumed == sorted(started, key=lambda r: rank[packs[started.index(r)]])
    assert sorted(again) == [0, 1, 2, 7]
    assert again[0] == 0


@pytest.mark.anyio
async def test_start_records_without_executing(make_flow: MakeFlow) -> None:
    flow = make_flow()
    executed: list[int] = []

    @flow.workflow()
    async def wf(c: Context, args: int) -> None:
        executed.append(args)

    run_ids = await flow.start("wf", 1)
    assert executed == []
    [run] = await flow.list_runs()
    assert (run.run_id, run.status, run.args) == (run_ids[0], "pending", 1)
    [result] = await flow.run()
    assert (result.run_id, result.status) == (run_ids[0], "succeeded")
    assert executed == [1]


@pytest.mark.anyio
async def test_start_does_not_replay_other_runs(make_flow: MakeFlow) -> None:
    flow = make_flow()
    replays: list[int] = []

    @flow.workflow()
    async def watch(c: Context, args: int) -> None:
        replays.append(args)
        while True:
            await c.pause_once()

    for i in range(50):
        await flow.start("watch", i)
    assert replays == []
    results = await flow.run()
    assert len(results) == 50
    assert sorted(replays) == list(range(50)), "each run executed once"


@pytest.mark.anyio
async def test_runs_execute_concurrently_up_to_max_concurrency(make_flow: MakeFlow) -> None:
    flow = make_flow(max_concurrency=3)
    active = 0
    peak = 0
    release = anyio.Event()
    arrived = 0

    @flow.sideeffect()
    async def work(c: Context) -> None:
        nonlocal active, peak, arrived
        active += 1
        arrived += 1
        peak = max(peak, active)
        if arrived == 3:
            release.set()  # three are inside at once: concurrency is real
        await release.wait()
        active -= 1

    @flow.workflow()
    async def wf(c: Context) -> None:
        await work(c)

    for _ in range(7):
        await flow.start("wf")
    results = await flow.run()
    assert [r.status for r in results] == ["succeeded"] * 7
    assert peak == 3


@pytest.mark.anyio
async def test_failing_workflow_fails_only_its_own_run(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger="go")
    async def good(c: Context) -> str:
        await c.log("fine")
        return "ok"

    @flow.workflow(trigger="go")
    async def bad(c: Context) -> str:
        await c.log("about to fail")
        raise KeyError("missing")

    results = await flow.run("go")
    assert [(r.workflow, r.status) for r in results] == [("good", "succeeded"), ("bad", "failed")]
    assert results[1].error == "KeyError: 'missing'"
    assert results[1].logs == ["about to fail"]
    assert await flow.run() == []


@pytest.mark.anyio
async def test_unstorable_result_fails_the_run(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> object:
        return object()

    [result] = await flow.run("wf")
    assert result.status == "failed"
    assert result.error is not None
    assert "SerializationError" in result.error


# -- inspection --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_run_and_list_runs(make_flow: MakeFlow, clock: Any) -> None:
    flow = make_flow()

    @flow.sideeffect()
    async def price(c: Context) -> int:
        return 120

    @flow.workflow()
    async def wf(c: Context, args: str) -> None:
        await c.log(f"watching {args}")
        await price(c)
        await c.set_state("last", args)
        await c.pause_once()

    [paused] = await flow.run("wf", "lemon")
    clock.advance(10)
    await flow.start("wf", "apple")
    run = await flow.get_run(paused.run_id)
    assert (run.workflow, run.trigger, run.args, run.status) == ("wf", "wf", "lemon", "paused")
    assert run.logs == ["watching lemon"]
    assert [(s.kind, s.value) for s in run.steps] == [
        ("log", "watching lemon"),
        ("sideeffect", 120),
        ("set_state", "lemon"),
        ("pause", None),
    ]
    assert run.created_at == clock.now() - 10
    runs = await flow.list_runs()
    assert [r.args for r in runs] == ["lemon", "apple"]
    assert [r.args for r in await flow.list_runs("pending")] == ["apple"]
    assert [r.args for r in await flow.list_runs(["paused", "pending"])] == ["lemon", "apple"]
    with pytest.raises(asyncflow.RunNotFoundError, match="'nope'"):
        await flow.get_run("nope")


@pytest.mark.anyio
async def test_async_with_keeps_the_flow_usable(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> int:
        return 1

    async with flow:
        async with flow:
            [r] = await flow.run("wf")
        assert (await flow.get_run(r.run_id)).status == "succeeded"


class _HeldAfterListing(asyncflow.Backend):
    """Another backend object over the same store whose invocation stops after listing the
    due runs, until the test lets it go on: so two invocations overlap in a known order."""

    def __init__(self, inner: asyncflow.Backend) -> None:
        self.inner = inner
        self.listed = anyio.Event()
        self.go_on = anyio.Event()

    async def read(self, key: asyncflow.Key) -> asyncflow.Entry | None:
        return await self.inner.read(key)

    async def read_many(self, keys: Any) -> list[asyncflow.Entry | None]:
        return await self.inner.read_many(keys)

    async def write(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        return await self.inner.write(key, data, **conditions)

    async def delete(self, key: asyncflow.Key, **conditions: Any) -> None:
        await self.inner.delete(key, **conditions)

    async def list(self, namespace: str) -> dict[str, str]:
        listed = await self.inner.list(namespace)
        if namespace == "active":  # (the runs; not the wait index, listed before them)
            self.listed.set()
            await self.go_on.wait()
        return listed

    def claim(self, key: asyncflow.Key) -> Any:
        return self.inner.claim(key)


@pytest.mark.anyio
async def test_overlapping_invocations_advance_a_run_once_each(tmp_path: Path) -> None:
    def define(flow: asyncflow.Flow) -> asyncflow.Flow:
        @flow.workflow()
        async def wf(c: Context) -> None:
            for i in range(3):
                await c.log(f"lap {i}")
                await c.pause_once()

        return flow

    first = define(asyncflow.setup(f"file:{tmp_path}"))
    held = _HeldAfterListing(asyncflow.FileBackend(tmp_path))
    late = define(asyncflow.setup(held))
    [run] = await first.run("wf")
    late_results: list[asyncflow.RunResult] = []

    async def invoke_late() -> None:
        late_results.extend(await late.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(invoke_late)
        await held.listed.wait()  # the late invocation saw the run paused at lap 0
        [advanced] = await first.run()  # meanwhile another invocation advances it
        assert advanced.logs == ["lap 0", "lap 1"]
        held.go_on.set()
    assert late_results == [], "the run had moved on since the listing: not due any more"
    assert (await first.get_run(run.run_id)).logs == ["lap 0", "lap 1"]


@pytest.mark.anyio
async def test_runs_of_a_workflow_the_code_no_longer_defines_are_left_alone(
    make_flow: MakeFlow, caplog: pytest.LogCaptureFixture
) -> None:
    old = make_flow()

    @old.workflow()
    async def retired(c: Context) -> None:
        await c.pause_once()

    [run] = await old.run("retired")
    new = make_flow()

    @new.workflow()
    async def current(c: Context) -> None: ...

    assert await new.run() == []
    assert "retired" in caplog.text
    assert (await new.get_run(run.run_id)).status == "paused", "kept for code that defines it"


@pytest.mark.anyio
async def test_a_cancelled_invocation_leaves_runs_resumable(make_flow: MakeFlow) -> None:
    flow = make_flow()
    executions: list[str] = []
    started = anyio.Event()

    @flow.sideeffect()
    async def first(c: Context) -> str:
        executions.append("first")
        return "done"

    @flow.sideeffect()
    async def slow(c: Context) -> None:
        executions.append("slow")
        if executions.count("slow") == 1:
            started.set()
            await anyio.sleep_forever()  # until the invocation is cancelled

    @flow.workflow()
    async def wf(c: Context) -> str:
        await first(c)
        await slow(c)
        return "finished"

    async with anyio.create_task_group() as tg:
        tg.start_soon(flow.run, "wf")
        await started.wait()
        tg.cancel_scope.cancel()  # e.g. a timeout around flow.run()
    # The same process invokes again: the claim was released, the stored step replays, and
    # only the side effect that was in flight runs again.
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", "finished")
    assert executions == ["first", "slow", "slow"]
