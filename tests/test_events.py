"""Events: c.event, flow.emit, event triggers, wait_event (with timeouts), and the handling of
events within the invocation that emitted them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
async def test_an_event_starts_its_workflows_in_the_same_invocation(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def 処理1(c: Context) -> None:
        await c.log("処理1")
        await c.event("event1", {"from": "処理1"})
        await c.log("emitted")

    @flow.workflow(trigger=asyncflow.event_trigger("event1"))
    async def 処理2(c: Context, args: dict[str, str]) -> str:
        await c.log(f"処理2 on {args['from']}")
        return args["from"]

    @flow.workflow(trigger="event1")  # a plain name is the same trigger
    async def 処理3(c: Context) -> None:
        await c.log("処理3")

    first, *started = await flow.run("処理1")
    assert (first.workflow, first.status, first.logs) == (
        "処理1",
        "succeeded",
        ["処理1", "emitted"],
    )
    assert sorted((r.workflow, r.status, tuple(r.logs)) for r in started) == [
        ("処理2", "succeeded", ("処理2 on 処理1",)),
        ("処理3", "succeeded", ("処理3",)),
    ]
    [run] = [r for r in started if r.workflow == "処理2"]
    assert run.result == "処理1"
    assert (await flow.get_run(run.run_id)).trigger == "event1"
    assert flow.workflows["処理2"] == "event1"


@pytest.mark.anyio
async def test_an_event_is_emitted_once_whatever_the_replays(make_flow: MakeFlow) -> None:
    def script() -> asyncflow.Flow:
        flow = make_flow()

        @flow.workflow()
        async def ping(c: Context) -> None:
            await c.event("pinged")
            await c.pause_once()
            await c.pause_once()

        @flow.workflow(trigger="pinged")
        async def pong(c: Context) -> None:
            await c.log("pong")

        return flow

    results = await script().run("ping")
    assert sorted(r.workflow for r in results) == ["ping", "pong"]
    for _ in range(2):
        [again] = await script().run()
        assert again.workflow == "ping"
    runs = await script().list_runs()
    assert sorted(r.workflow for r in runs) == ["ping", "pong"]


@pytest.mark.anyio
async def test_flow_emit_starts_and_wakes_and_tolerates_no_listener(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger="door")
    async def on_door(c: Context, args: dict[str, str]) -> str:
        return args["who"]

    @flow.workflow()
    async def guard(c: Context) -> Any:
        return await c.wait_event("door")

    [waiting] = await flow.run("guard")
    assert waiting.status == "paused"
    shown = await flow.get_run(waiting.run_id)
    assert (shown.wait_event, shown.wake_at) == ("door", None)

    results = await flow.emit("door", {"who": "Ada"})
    assert sorted((r.workflow, r.status, r.result) for r in results) == [
        ("guard", "succeeded", {"who": "Ada"}),
        ("on_door", "succeeded", "Ada"),
    ]
    assert await flow.emit("nobody listens") == []
    with pytest.raises(asyncflow.SerializationError, match="event 'door'"):
        await flow.emit("door", {1, 2})
    with pytest.raises(asyncflow.UsageError):
        await flow.emit("")


@pytest.mark.anyio
async def test_a_waiting_run_is_not_replayed_until_its_event(make_flow: MakeFlow) -> None:
    replays: list[int] = []
    flow = make_flow()

    @flow.workflow()
    async def wait(c: Context) -> Any:
        replays.append(1)
        return await c.wait_event("go")

    await flow.run("wait")
    for _ in range(3):
        assert await flow.run() == []
    assert len(replays) == 1
    [done] = await flow.emit("go", 7)
    assert (done.status, done.result, len(replays)) == ("succeeded", 7, 2)


@pytest.mark.anyio
async def test_each_waiting_run_receives_each_event_once_and_only_after_its_wait_began(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def collect(c: Context) -> list[Any]:
        got = []
        for _ in range(3):
            got.append(await c.wait_event("tick"))
            await c.log(f"got {got[-1]}")
        return got

    await flow.emit("tick", "too early")  # before any wait began: received by nobody
    [a] = await flow.run("collect")
    [b] = await flow.run("collect")
    results = await flow.emit("tick", 1)
    assert {(r.run_id, r.logs[-1]) for r in results} == {(a.run_id, "got 1"), (b.run_id, "got 1")}
    await flow.emit("tick", 2)
    await flow.emit("other", 99)
    results = await flow.emit("tick", 3)
    assert {(r.run_id, r.status) for r in results} == {
        (a.run_id, "succeeded"),
        (b.run_id, "succeeded"),
    }
    assert {r.run_id: r.result for r in results} == {a.run_id: [1, 2, 3], b.run_id: [1, 2, 3]}


@pytest.mark.anyio
async def test_an_event_from_a_workflow_wakes_a_waiting_run_in_the_same_invocation(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def deploy(c: Context) -> str:
        answer = await c.wait_event(f"承認:{c.run_id}")
        return f"deployed by {answer['by']}"

    @flow.workflow()
    async def approve(c: Context, args: dict[str, str]) -> None:
        await c.event(f"承認:{args['run_id']}", {"by": "Ada"})

    [waiting] = await flow.run("deploy")
    results = await flow.run("approve", {"run_id": waiting.run_id})
    assert [(r.workflow, r.status) for r in results] == [
        ("approve", "succeeded"),
        ("deploy", "succeeded"),
    ]
    assert results[1].result == "deployed by Ada"


@pytest.mark.anyio
async def test_wait_event_times_out(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wait(c: Context) -> str:
        try:
            await c.wait_event("never", timeout=60)
        except asyncflow.WaitTimeout as exc:
            await c.log(str(exc))
            return "gave up"
        return "got it"

    [run] = await flow.run("wait")
    assert run.status == "paused"
    shown = await flow.get_run(run.run_id)
    assert (shown.wait_event, shown.wake_at) == ("never", clock() + 60)
    clock.advance(59)
    assert await flow.run() == []
    clock.advance(1)
    [run] = await flow.run()
    assert (run.status, run.result) == ("succeeded", "gave up")
    assert run.logs[0].startswith("no event 'never' was emitted before ")
    # A late event changes nothing: the timeout was recorded.
    assert await flow.emit("never") == []
    [step] = (await flow.get_run(run.run_id)).steps[:1]
    assert (step.kind, step.done, step.error) == ("wait_event", True, "WaitTimeout")


@pytest.mark.anyio
async def test_an_event_before_the_timeout_wins(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wait(c: Context) -> Any:
        return await c.wait_event("soon", timeout=60)

    await flow.run("wait")
    clock.advance(30)
    [run] = await flow.emit("soon", "here")
    assert (run.status, run.result) == ("succeeded", "here")
    assert await flow.next_wakeup() is None


@pytest.mark.anyio
async def test_an_event_cycle_is_stopped_with_a_clear_error(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger="ping")
    async def ping(c: Context) -> None:
        await c.event("pong")

    @flow.workflow(trigger="pong")
    async def pong(c: Context) -> None:
        await c.event("ping")

    with pytest.raises(asyncflow.EventCycleError, match="cycle") as info:
        await flow.run("ping")
    assert "'ping'" in str(info.value) or "'pong'" in str(info.value)
    # Nothing was lost: the last runs started are stored, pending.
    pending = await flow.list_runs("pending")
    assert len(pending) == 1
    assert len(await flow.list_runs("succeeded")) == 1 + 100  # the first round, 100 more


@pytest.mark.anyio
async def test_an_event_delivered_again_after_a_crash_starts_nothing_twice(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def parent(c: Context) -> None:
        await c.event("child")
        await c.pause_once()

    @flow.workflow(trigger="child")
    async def child(c: Context) -> None:
        pass

    [first, started] = await flow.run("parent")
    assert started.workflow == "child"
    async with flow:
        # As if the invocation had died after delivering but before storing "sent".
        key = ("active", first.run_id)
        entry = await flow.backend.read(key)
        assert entry is not None
        raw = json.loads(entry.data)
        [step] = [s for s in raw["steps"] if s["kind"] == "event"]
        del step["sent"]
        await flow.backend.write(key, json.dumps(raw).encode(), if_version=entry.version)
    [again] = await flow.run()
    assert again.run_id == first.run_id
    assert sorted(r.workflow for r in await flow.list_runs()) == ["child", "parent"]
    sent = [s for s in (await flow.get_run(first.run_id)).steps if s.kind == "event"]
    assert len(sent) == 1


@pytest.mark.anyio
async def test_concurrent_emits_hand_each_waiting_run_one_event(make_flow: MakeFlow) -> None:
    def script() -> asyncflow.Flow:
        flow = make_flow()

        @flow.workflow()
        async def wait(c: Context) -> Any:
            return await c.wait_event("go")

        return flow

    setup = script()
    ids = [r.run_id for _ in range(10) for r in await setup.run("wait")]
    results: list[asyncflow.RunResult] = []

    async def emit(value: int) -> None:
        results.extend(await script().emit("go", value))

    async with anyio.create_task_group() as tg:
        for value in range(3):
            tg.start_soon(emit, value)
    runs = {r.run_id: r for r in await setup.list_runs()}
    assert all(runs[i].status == "succeeded" for i in ids), "no run left waiting"
    assert all(runs[i].result in (0, 1, 2) for i in ids)
    # Each run finished once, in one of the invocations, with the event it was handed.
    finished = [r for r in results if r.status == "succeeded"]
    assert sorted(r.run_id for r in finished) == sorted(ids)
    assert all(r.result == runs[r.run_id].result for r in finished)


EMITTER = """
import json, sys, anyio, asyncflow
flow = asyncflow.setup(sys.argv[1])

@flow.workflow()
async def wait(c):
    return await c.wait_event("go")

async def main():
    if sys.argv[2] == "start":
        results = [r for _ in range(8) for r in await flow.run("wait")]
    elif sys.argv[2] == "emit":
        results = await flow.emit("go", int(sys.argv[3]))
    else:
        results = await flow.run()
    print(json.dumps([[r.run_id, r.status, r.result] for r in results]))

anyio.run(main)
"""


@pytest.mark.procs
def test_processes_emitting_and_invoking_at_once_finish_each_waiter_once(
    tmp_path: Path,
) -> None:
    script = tmp_path / "emitter.py"
    script.write_text(EMITTER)
    backend = f"file:{tmp_path / 'store'}"

    def spawn(*argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), backend, *argv], stdout=subprocess.PIPE, text=True
        )

    out, _ = spawn("start").communicate(timeout=60)
    waiting = {run_id for run_id, status, _ in json.loads(out) if status == "paused"}
    assert len(waiting) == 8
    procs = [
        spawn("emit", "1"),
        spawn("run"),
        spawn("emit", "2"),
        spawn("run"),
        spawn("emit", "3"),
    ]
    finished: list[tuple[str, int]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        finished += [
            (run_id, result) for run_id, status, result in json.loads(out) if status == "succeeded"
        ]
    assert sorted(run_id for run_id, _ in finished) == sorted(waiting), "each finished once"
    assert all(result in (1, 2, 3) for _, result in finished)


class _FailsStartingRuns(asyncflow.Backend):
    """A real backend whose writes of new run records fail while ``failing`` is set."""

    def __init__(self, inner: asyncflow.Backend) -> None:
        self.inner = inner
        self.failing = False

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def read(self, key: asyncflow.Key) -> asyncflow.Entry | None:
        return await self.inner.read(key)

    async def write(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        if self.failing and key[0] == "active" and conditions.get("if_absent"):
            raise asyncflow.BackendError("disk full", location=key[1])
        return await self.inner.write(key, data, **conditions)

    async def delete(self, key: asyncflow.Key, **conditions: Any) -> None:
        await self.inner.delete(key, **conditions)

    async def list(self, namespace: str) -> dict[str, str]:
        return await self.inner.list(namespace)

    def claim(self, key: asyncflow.Key) -> Any:
        return self.inner.claim(key)

    def claim_read(self, keys: Any, versions: Any) -> Any:
        # (A claim that is a lease changes the version: the default, a claim then a read
        # compared with the listed version, would skip every run of such a backend.)
        return self.inner.claim_read(keys, versions)

    def affinity(self, key: asyncflow.Key) -> int:
        return self.inner.affinity(key)

    @property
    def packs_runs(self) -> bool:  # type: ignore[override]
        return self.inner.packs_runs


@pytest.mark.anyio
async def test_an_event_that_storage_failed_to_deliver_is_delivered_by_the_replay(
    make_flow: MakeFlow,
) -> None:
    setup = make_flow()
    backend = _FailsStartingRuns(setup.backend)
    flow = asyncflow.setup(backend)
    logs: list[str] = []

    @flow.workflow()
    async def parent(c: Context) -> None:
        await c.event("child", "hi")

    @flow.workflow(trigger="child")
    async def child(c: Context, args: str) -> None:
        logs.append(args)

    [first] = await flow.start("parent")
    backend.failing = True
    with pytest.raises(asyncflow.BackendError, match="disk full"):
        await flow.run()
    assert logs == []
    [stored] = await flow.list_runs()
    assert (stored.run_id, stored.status, stored.steps[0].kind) == (first, "pending", "event")
    backend.failing = False
    results = await flow.run()
    assert sorted((r.workflow, r.status) for r in results) == [
        ("child", "succeeded"),
        ("parent", "succeeded"),
    ]
    assert logs == ["hi"]


@pytest.mark.anyio
async def test_an_event_from_before_the_wait_began_wakes_nothing(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    from asyncflow._events import wake_waiters
    from asyncflow._record import new_run_id
    from asyncflow._store import Store

    flow = make_flow()

    @flow.workflow()
    async def wait(c: Context) -> Any:
        return await c.wait_event("go")

    earlier = new_run_id()  # an event made before the wait (delivered late, after a crash)
    [run] = await flow.run("wait")
    async with flow:
        store = Store(flow.backend, clock)
        assert await wake_waiters(store, "go", 1, earlier) == []
        assert await wake_waiters(store, "go", 2, new_run_id()) == [run.run_id]
    [done] = await flow.run()
    assert done.result == 2


CRASHER = """
import json, sys, anyio, asyncflow
from pathlib import Path

flow = asyncflow.setup(sys.argv[1])
folder = Path(sys.argv[2])

@flow.sideeffect()
async def hang_once(c):
    marker = folder / "hung"
    if not marker.exists():
        marker.write_text("")
        await anyio.sleep_forever()  # the test kills the process here
    return "ok"

@flow.sideeffect()
async def note(c, args):
    with open(folder / "child-ran", "a") as f:
        f.write(f"{args}\\n")

@flow.workflow()
async def parent(c):
    await c.event("child", 7)
    return await hang_once(c)

@flow.workflow(trigger="child")
async def child(c, args):
    await note(c, args)

async def main():
    results = await flow.run(*sys.argv[3:])
    print(json.dumps([[r.workflow, r.status] for r in results]))

anyio.run(main)
"""


@pytest.mark.procs
def test_an_event_survives_a_kill_9_of_its_invocation_and_runs_once(tmp_path: Path) -> None:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    argv = [sys.executable, str(script), f"file:{tmp_path / 'store'}", str(tmp_path)]
    proc = subprocess.Popen([*argv, "parent"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "hung").exists():
            assert proc.poll() is None, "the invocation ended before it hung"
            assert time.monotonic() < deadline, "the invocation never reached its side effect"
            time.sleep(0.01)  # polling a file the process writes, with a deadline
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(timeout=30)
    assert not (tmp_path / "child-ran").exists(), "the child had not run yet"

    out = subprocess.run([*argv], capture_output=True, text=True, timeout=60, check=True).stdout
    assert sorted(map(tuple, json.loads(out))) == [("child", "succeeded"), ("parent", "succeeded")]
    assert (tmp_path / "child-ran").read_text() == "7\n", "the child ran once"
    out = subprocess.run([*argv], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == []
