"""Run management: cancel, retry, idempotent starts (in one process and across processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncflow
from asyncflow import Context
from asyncflow.testing import MockClock

MakeFlow = Callable[..., asyncflow.Flow]


@pytest.mark.anyio
async def test_cancel_stops_a_waiting_run_for_good(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()

    @flow.workflow()
    async def nap(c: Context) -> None:
        await c.log("nap")
        await c.sleep(60)
        await c.log("awake")

    [run] = await flow.run("nap")
    clock.advance(10)
    await flow.cancel(run.run_id)
    shown = await flow.get_run(run.run_id)
    assert (shown.status, shown.logs, shown.updated_at) == ("cancelled", ["nap"], clock())
    assert await flow.next_wakeup() is None
    clock.advance(100)
    assert await flow.run() == []
    assert [r.status for r in await flow.list_runs("cancelled")] == ["cancelled"]
    with pytest.raises(asyncflow.UsageError, match="cancelled already"):
        await flow.cancel(run.run_id)
    with pytest.raises(asyncflow.RunNotFoundError):
        await flow.cancel("nope")


@pytest.mark.anyio
async def test_cancel_during_an_invocation_stops_the_run_before_its_next_step(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()
    done: list[str] = []

    @flow.sideeffect()
    async def step(c: Context, name: str) -> str:
        if name == "first":
            await flow.cancel(c.run_id)  # as another process would, while this one runs
        done.append(name)
        return name

    @flow.workflow()
    async def job(c: Context) -> None:
        await step(c, "first")
        await step(c, "second")

    assert await flow.run("job") == []  # it lost its checkpoint to the cancellation
    assert done == ["first"], "the next side effect did not start"
    [run] = await flow.list_runs()
    assert run.status == "cancelled"


@pytest.mark.anyio
async def test_retry_reexecutes_the_failed_step_and_replays_the_rest(make_flow: MakeFlow) -> None:
    flow = make_flow()
    calls: list[str] = []
    broken = [True]

    @flow.sideeffect()
    async def prepare(c: Context) -> str:
        calls.append("prepare")
        return "ready"

    @flow.sideeffect()
    async def ship(c: Context) -> str:
        calls.append("ship")
        if broken[0]:
            raise ConnectionError("carrier down")
        return "shipped"

    @flow.workflow()
    async def order(c: Context) -> list[str]:
        return [await prepare(c), await ship(c)]

    [run] = await flow.run("order")
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("SideEffectError")
    assert run.error.endswith(".ship' raised ConnectionError: carrier down")
    with pytest.raises(asyncflow.UsageError, match="only a waiting run can be cancelled"):
        await flow.cancel(run.run_id)
    broken[0] = False
    [again] = await flow.retry(run.run_id)
    assert (again.run_id, again.status, again.result) == (
        run.run_id,
        "succeeded",
        ["ready", "shipped"],
    )
    assert calls == ["prepare", "ship", "ship"]
    assert (await flow.get_run(run.run_id)).status == "succeeded"
    with pytest.raises(asyncflow.UsageError, match="only a failed run"):
        await flow.retry(run.run_id)
    with pytest.raises(asyncflow.RunNotFoundError):
        await flow.retry("nope")


@pytest.mark.anyio
async def test_retry_enters_the_side_effect_around_the_failed_one_again(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()
    broken = [True]

    @flow.sideeffect()
    async def inner(c: Context) -> int:
        if broken[0]:
            raise ValueError("no")
        return 2

    @flow.sideeffect()
    async def outer(c: Context) -> int:
        await c.log("outer")
        return await inner(c) * 10

    @flow.workflow()
    async def job(c: Context) -> int:
        return await outer(c)

    [run] = await flow.run("job")
    assert run.status == "failed"
    broken[0] = False
    [again] = await flow.retry(run.run_id)
    assert (again.status, again.result, again.logs) == ("succeeded", 20, ["outer"])


@pytest.mark.anyio
async def test_retry_keeps_what_other_branches_finished(make_flow: MakeFlow) -> None:
    flow = make_flow()
    calls: list[str] = []
    broken = [True]
    first_failed = anyio.Event()

    @flow.sideeffect()
    async def flaky(c: Context) -> str:
        calls.append("flaky")
        if broken[0]:
            first_failed.set()
            raise ConnectionError("down")
        return "flaky ok"

    @flow.sideeffect()
    async def steady(c: Context, n: int) -> str:
        await first_failed.wait()  # recorded after the failure: later in the journal
        calls.append(f"steady{n}")
        return f"steady{n} ok"

    async def twice(c: Context) -> list[str]:
        return [await steady(c, 1), await steady(c, 2)]

    @flow.workflow()
    async def job(c: Context) -> Any:
        parts = await c.gather(flaky, twice)
        await c.log("gathered")
        return parts

    [run] = await flow.run("job")
    assert run.status == "failed"
    assert calls == ["flaky", "steady1", "steady2"]
    broken[0] = False
    first_failed = anyio.Event()
    first_failed.set()
    [again] = await flow.retry(run.run_id)
    assert (again.status, again.result, again.logs) == (
        "succeeded",
        ["flaky ok", ["steady1 ok", "steady2 ok"]],
        ["gathered"],
    )
    assert calls == ["flaky", "steady1", "steady2", "flaky"], "the other branch replayed"


@pytest.mark.anyio
async def test_a_key_starts_at_most_one_run_even_concurrently(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def pay(c: Context, args: dict[str, Any]) -> int:
        return int(args["amount"])

    [first] = await flow.run("pay", {"amount": 5}, key="invoice-1")
    assert await flow.run("pay", {"amount": 5}, key="invoice-1") == []
    ids: list[list[str]] = []

    async def start() -> None:
        ids.append(await flow.start("pay", {"amount": 7}, key="invoice-2"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(start)
    assert len({tuple(i) for i in ids}) == 1, "every caller is told the one run's id"
    results = await flow.run()
    assert [r.run_id for r in results] == ids[0]
    assert sorted(r.args["amount"] for r in await flow.list_runs()) == [5, 7]
    assert await flow.start("pay", {"amount": 5}, key="invoice-1") == [first.run_id]
    with pytest.raises(asyncflow.UsageError):
        await flow.run(None, key="k")
    with pytest.raises(asyncflow.UsageError):
        await flow.start("pay", key="")


WORKER = """
import sys, anyio, asyncflow
flow = asyncflow.setup(sys.argv[1])

@flow.workflow()
async def pay(c, args):
    return args

async def main():
    [run_id] = await flow.start("pay", {"who": sys.argv[2]}, key="order-42")
    print(run_id)

anyio.run(main)
"""


@pytest.mark.procs
def test_a_key_starts_one_run_across_processes(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    backend = f"file:{tmp_path / 'store'}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), backend, str(i)], stdout=subprocess.PIPE, text=True
        )
        for i in range(6)
    ]
    ids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(ids) == 1
    runs = list((tmp_path / "store" / "active").glob("*.json"))
    assert [r.stem for r in runs] == list(ids)
    assert json.loads(runs[0].read_text())["workflow"] == "pay"


@pytest.mark.anyio
async def test_a_key_whose_run_was_never_stored_starts_it(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def job(c: Context) -> str:
        return c.run_id

    [run_id] = await flow.start("job", key="k")
    async with flow:
        # As if the caller had died between taking the key and storing its run.
        await flow.backend.delete(("active", run_id))
    assert await flow.start("job", key="k") == [run_id]
    [run] = await flow.run()
    assert (run.run_id, run.result) == (run_id, run_id)
    assert await flow.run("job", key="k") == []


@pytest.mark.anyio
async def test_retry_after_a_timeout_waits_again(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()

    @flow.workflow()
    async def approve(c: Context) -> Any:
        await c.log("asked")
        return await c.wait_event("yes", timeout=60)

    [run] = await flow.run("approve")
    clock.advance(60)
    [run] = await flow.run()
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.startswith("WaitTimeout")
    [again] = await flow.retry(run.run_id)
    assert (again.status, again.logs) == ("paused", ["asked"])
    shown = await flow.get_run(run.run_id)
    assert (shown.wait_event, shown.wake_at) == ("yes", clock() + 60)
    [done] = await flow.emit("yes", "ok")
    assert (done.run_id, done.status, done.result) == (run.run_id, "succeeded", "ok")
