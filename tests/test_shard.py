"""Shards: ``flow.run(shard=(k, n))``, ``run --shard K/N``, and the Lambda handler's
``{"shard": [k, n]}``: n invocations share the due runs, each run advanced by exactly one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from lambda_events import scheduled, sqs

import asyncflow
import asyncflow.aws_lambda
from asyncflow import Context
from asyncflow._shard import Shard, as_shard, parse_shard, shard_of
from asyncflow.testing import MockClock

MakeFlow = Callable[..., asyncflow.Flow]
TESTS = Path(__file__).resolve().parent


def rounds_flow(make_flow: MakeFlow, **kwargs: Any) -> asyncflow.Flow:
    """A flow whose `tick` runs pause once per invocation, three times."""
    flow = make_flow(**kwargs)

    @flow.workflow()
    async def tick(c: Context) -> int:
        for _ in range(3):
            await c.pause_once()
        return 3

    return flow


# -- the hash ----------------------------------------------------------------------------------


@pytest.mark.procs
def test_a_runs_shard_is_the_same_in_every_process_and_python() -> None:
    ids = ["0190a1b2c3d4e5f6a7b8", "x", "ラン", "0" * 20]
    # Pinned (CRC-32): a changed hash would move runs between shards under a deployment.
    assert [shard_of(i, 7) for i in ids] == [1, 1, 6, 5]
    assert [shard_of(i, 1000) for i in ids] == [186, 923, 453, 555]
    code = "import json, sys; from asyncflow._shard import shard_of; print(json.dumps("
    code += "[shard_of(i, 7) for i in json.loads(sys.argv[1])]))"
    for seed in ("1", "2"):  # hash() would differ between these
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(ids)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out) == [1, 1, 6, 5]


def test_run_ids_spread_evenly_over_the_shards() -> None:
    from asyncflow._record import new_run_id

    counts = Counter(shard_of(new_run_id(), 4) for _ in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(800 < c < 1200 for c in counts.values()), counts


@pytest.mark.parametrize(
    "bad", [(1, 1), (2, 2), (-1, 2), (0, 0), (3, -1), (True, 2), (0, 2.0), (0,), (0, 1, 2), "0/2"]
)
def test_a_bad_shard_is_a_usage_error_naming_it(bad: object) -> None:
    with pytest.raises(asyncflow.UsageError, match="0 <= k < n") as info:
        as_shard(bad)
    assert str(bad).strip("()[]").split(",")[0] in str(info.value)


def test_shards_from_the_command_line() -> None:
    assert parse_shard("2/5") == Shard(2, 5) == (2, 5)
    assert str(parse_shard("0/1")) == "0/1"
    for bad in ("5/5", "1", "a/b", "-1/2", "1/-2", "1 / 2", "½/2"):
        with pytest.raises(asyncflow.UsageError, match="--shard") as info:
            parse_shard(bad)
        assert "5, 5" in str(info.value) or repr(bad) in str(info.value)


# -- flow.run(shard=...) -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("n", [1, 2, 3, 4])
async def test_n_shards_advance_every_due_run_exactly_once(make_flow: MakeFlow, n: int) -> None:
    flow = rounds_flow(make_flow)
    async with flow:
        ids = [rid for _ in range(40) for rid in await flow.start("tick")]
        for _round in range(3):
            advanced: Counter[str] = Counter()
            for k in range(n):
                results = await flow.run(shard=(k, n))
                # Only its own share: a run's shard is its id's hash modulo n.
                assert {shard_of(r.run_id, n) for r in results} <= {k}
                advanced.update(r.run_id for r in results)
            assert sorted(advanced) == sorted(ids)
            assert set(advanced.values()) == {1}
            assert {r.status for r in await flow.list_runs()} == {"paused"}
        for k in range(n):
            await flow.run(shard=(k, n))
        runs = await flow.list_runs()
    assert {(r.status, r.result) for r in runs} == {("succeeded", 3)}


def covers(ids: list[str], n: int) -> bool:
    """Whether every shard of ``n`` has a run of ``ids`` (run ids are random: a test that
    needs each shard to have work starts runs until it does, rather than hope)."""
    return len({shard_of(rid, n) for rid in ids}) == n


@pytest.mark.anyio
async def test_each_shard_leaves_the_others_runs_alone(make_flow: MakeFlow) -> None:
    flow = rounds_flow(make_flow)
    async with flow:
        ids: list[str] = []
        while not covers(ids, 3):
            ids += [rid for _ in range(12) for rid in await flow.start("tick")]
        mine = [rid for rid in ids if shard_of(rid, 3) == 1]
        assert 0 < len(mine) < len(ids)
        results = await flow.run(shard=(1, 3))
        assert sorted(r.run_id for r in results) == sorted(mine)
        pending = {r.run_id for r in await flow.list_runs("pending")}
        assert pending == set(ids) - set(mine)


@pytest.mark.anyio
async def test_a_bad_shard_changes_nothing(make_flow: MakeFlow) -> None:
    flow = rounds_flow(make_flow)
    [rid] = await flow.start("tick")
    for bad in [(2, 2), (0, "2"), 3]:
        with pytest.raises(asyncflow.UsageError, match=r"shard .*0 <= k < n"):
            await flow.run("tick", shard=bad)  # type: ignore[arg-type]
    assert [r.run_id for r in await flow.list_runs()] == [rid]


@pytest.mark.anyio
async def test_only_shard_0_ticks_every_and_cron_schedules(make_flow: MakeFlow) -> None:
    clock = MockClock(1_767_268_980.0)  # 2026-01-01T12:03:00Z
    flow = make_flow(clock=clock)

    @flow.workflow(trigger=asyncflow.every_trigger())
    async def heartbeat(c: Context) -> None:
        pass

    @flow.workflow(trigger=asyncflow.cron_trigger("*/10 * * * *"))
    async def report(c: Context, args: dict[str, str]) -> str:
        return args["tick"]

    async with flow:
        # Shards 1 and 2 do not even note the cron's first check: no mark to contend for.
        assert await flow.run(shard=(1, 3)) == await flow.run(shard=(2, 3)) == []
        assert await flow.backend.read(("cron", "report")) is None
        assert [r.workflow for r in await flow.run(shard=(0, 3))] == ["heartbeat"]
        mark = await flow.backend.read(("cron", "report"))
        assert mark is not None
        clock.advance(3600)
        for k in (2, 1):
            assert await flow.run(shard=(k, 3)) == []
        assert await flow.backend.read(("cron", "report")) == mark  # untouched
        results = await flow.run(shard=(0, 3))
    assert sorted((r.workflow, r.result) for r in results) == [
        ("heartbeat", None),
        ("report", "2026-01-01T13:00:00+00:00"),
    ]


@pytest.mark.anyio
async def test_runs_a_sharded_invocation_starts_or_wakes_are_advanced_by_it(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def waiter(c: Context) -> Any:
        return await c.wait_event("go")

    @flow.workflow()
    async def starter(c: Context) -> str:
        await c.event("go", "now")
        return "sent"

    async with flow:
        n = 4
        waiters: list[str] = []
        while not covers(waiters, n):
            waiters += [rid for _ in range(8) for rid in await flow.start("waiter")]
        assert len(await flow.run()) == len(waiters)  # all waiting
        elsewhere = [rid for rid in waiters if shard_of(rid, n) != 0]
        assert elsewhere
        # Shard 0 starts `starter` (whatever its id's shard), whose event wakes the waiters of
        # every shard: this invocation advances them, as an unsharded one would.
        results = await flow.run("starter", shard=(0, n))
    assert [r.workflow for r in results[:1]] == ["starter"]
    woken = {r.run_id: (r.status, r.result) for r in results[1:]}
    assert woken == dict.fromkeys(waiters, ("succeeded", "now"))


@pytest.mark.anyio
async def test_a_shard_keeps_the_index_entries_of_the_others_sleeping_runs(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def nap(c: Context) -> str:
        await c.sleep(3600)
        return "rested"

    async with flow:
        ids = [rid for _ in range(10) for rid in await flow.start("nap")]
        await flow.run()
        wake = await flow.next_wakeup()
        assert wake is not None
        for k in range(3):
            assert await flow.run(shard=(k, 3)) == []  # asleep: skipped unread
        # Each shard read the index for its own runs only: had one dropped the others' entries
        # as stale, they would be read, and the earliest wake-up lost.
        assert await flow.next_wakeup() == wake
        clock.advance(3600)
        advanced = [r.run_id for k in range(3) for r in await flow.run(shard=(k, 3))]
    assert sorted(advanced) == sorted(ids)


@pytest.mark.anyio
async def test_a_shard_waits_for_its_own_runs_timers(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def nap(c: Context, seconds: float) -> None:
        await c.sleep(seconds)

    async with flow:
        ids = [rid for s in range(1, 13) for rid in await flow.start("nap", s * 60)]
        await flow.run()
        wakes = {}
        for k in range(3):
            mine = [i for i, rid in enumerate(ids) if shard_of(rid, 3) == k]
            wakes[k] = clock() + (mine[0] + 1) * 60 if mine else None
            got = await flow.next_wakeup(shard=(k, 3))
            if wakes[k] is None:
                assert got is None, k
            else:
                assert got is not None, k
                assert got.timestamp() == pytest.approx(wakes[k], abs=0.002), k
        everyone = await flow.next_wakeup()
    assert everyone is not None
    assert everyone.timestamp() == pytest.approx(min(w for w in wakes.values() if w), abs=0.002)


# -- the command line --------------------------------------------------------------------------


def cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASYNCFLOW_BACKEND": f"file:{tmp_path / 'store'}"}
    return subprocess.run(
        [sys.executable, str(TESTS / "helpers" / "proc_cli_flow.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.procs
def test_run_shard_resumes_one_share_of_the_due_runs(tmp_path: Path) -> None:
    ids: list[str] = []
    while len(ids) < 6 or not covers(ids, 2):
        proc = cli(tmp_path, "start", "wait", "--json")
        assert proc.returncode == 0, proc.stderr
        ids += json.loads(proc.stdout)["run_ids"]
    advanced: list[str] = []
    for k in range(2):
        proc = cli(tmp_path, "run", "--shard", f"{k}/2", "--json")
        assert proc.returncode == 0, proc.stderr
        results = json.loads(proc.stdout)
        assert {shard_of(r["run_id"], 2) for r in results} <= {k}
        advanced += [r["run_id"] for r in results]
    assert sorted(advanced) == sorted(ids)
    # --until-done takes it too.
    proc = cli(tmp_path, "run", "--shard", "1/2", "--until-done", "--json")
    assert proc.returncode == 0, proc.stderr
    ones = sorted(rid for rid in ids if shard_of(rid, 2) == 1)
    assert sorted(r["run_id"] for r in json.loads(proc.stdout)) == ones


@pytest.mark.procs
@pytest.mark.parametrize("bad", ["2/2", "1", "x/3"])
def test_run_with_a_bad_shard_is_one_error_line(tmp_path: Path, bad: str) -> None:
    proc = cli(tmp_path, "run", "--shard", bad)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --shard"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr


# -- the Lambda handler ------------------------------------------------------------------------


@pytest.fixture
def lam() -> Iterator[asyncflow.aws_lambda.LambdaHandler]:
    flow = rounds_flow(lambda: asyncflow.setup(asyncflow.MemoryBackend()))
    handler = asyncflow.aws_lambda.handler(flow)
    yield handler
    handler.close()


def started(
    handler: asyncflow.aws_lambda.LambdaHandler, count: int, *, shards: int = 1
) -> list[str]:
    """Start ``count`` runs without advancing any (before the handler's first call), and
    ``count`` more until every one of ``shards`` shards has one."""

    async def start() -> list[str]:
        ids: list[str] = []
        while not ids or not covers(ids, shards):
            ids += [rid for _ in range(count) for rid in await handler.flow.start("tick")]
        return ids

    return anyio.run(start)


def test_lambda_shard_messages_from_sqs_eventbridge_and_direct_calls(
    lam: asyncflow.aws_lambda.LambdaHandler,
) -> None:
    ids = started(lam, 12)
    n = 3
    # One SQS message per shard, as deploy/'s fan-out sends them: every run to its first pause.
    for k in range(n):
        assert lam(sqs({"shard": [k, n]}), None) == {"batchItemFailures": []}
    # Direct invocations: every run to its second pause, each by the invocation of its shard.
    advanced = []
    for k in range(n):
        results = lam({"shard": [k, n]}, None)
        assert {shard_of(r["run_id"], n) for r in results} <= {k}
        advanced += [r["run_id"] for r in results]
    assert sorted(advanced) == sorted(ids)
    # An EventBridge detail (shard 0 of 1: all of them), then a plain resume, end every run:
    # had a run been advanced twice, or not at all, above, it would not end exactly here.
    bridge = {**scheduled(), "detail": {"shard": [0, 1]}}
    results = lam(bridge, None)
    assert sorted(r["run_id"] for r in results) == sorted(ids)
    assert {r["status"] for r in results} == {"paused"}
    results = lam({}, None)
    assert {(r["status"], r["result"]) for r in results} == {("succeeded", 3)}


def test_lambda_sqs_shard_messages_advance_only_their_shards(
    lam: asyncflow.aws_lambda.LambdaHandler,
) -> None:
    ids = started(lam, 12, shards=3)
    assert lam(sqs({"shard": [1, 3]}), None) == {"batchItemFailures": []}
    lam({}, None)
    lam({}, None)
    statuses = {r["run_id"]: r["status"] for r in lam({}, None)}
    ones = {rid for rid in ids if shard_of(rid, 3) == 1}
    assert 0 < len(ones) < len(ids)
    assert statuses == {rid: "succeeded" if rid in ones else "paused" for rid in ids}


def test_lambda_refuses_bad_shards_and_an_emit_with_a_shard(
    lam: asyncflow.aws_lambda.LambdaHandler,
) -> None:
    [rid] = started(lam, 1)
    for event, where in (
        ({"shard": [3, 3]}, "Lambda event"),
        ({"shard": "0/3"}, "Lambda event"),
        ({**scheduled(), "detail": {"shard": [0]}}, "EventBridge detail"),
        ({"event": "go", "shard": [0, 2]}, "Lambda event"),
    ):
        with pytest.raises(asyncflow.UsageError, match="shard") as info:
            lam(event, None)
        assert where in str(info.value)
    batch = sqs({"shard": [2, 2]}, {"event": "go", "shard": [0, 2]}, {"shard": [0, 1]})
    assert lam(batch, None) == {
        "batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]
    }
    # The valid message of the batch resumed its shard (the whole store: 0 of 1), so three
    # more resumes end the run.
    assert [r["status"] for r in lam({}, None) + lam({}, None)] == ["paused", "paused"]
    assert [(r["run_id"], r["status"]) for r in lam({}, None)] == [(rid, "succeeded")]


def test_lambda_an_sqs_batch_delivers_its_events_then_resumes_only_its_shard() -> None:
    flow = asyncflow.setup(asyncflow.MemoryBackend())

    @flow.workflow()
    async def waiter(c: Context) -> Any:
        return await c.wait_event("go")

    async def start() -> list[str]:
        ids: list[str] = []
        while not covers(ids, 3):
            ids += [rid for _ in range(12) for rid in await flow.start("waiter")]
        return ids

    ids = anyio.run(start)
    handler = asyncflow.aws_lambda.handler(flow)
    try:
        assert len(handler({}, None)) == len(ids)  # all waiting
        batch = sqs({"event": "go", "args": "now"}, {"shard": [1, 3]})
        assert handler(batch, None) == {"batchItemFailures": []}
        # Delivered to the waiters of every shard; shard 1's advanced by that invocation,
        # the others' left due for their own shards.
        rest = {r["run_id"]: r["result"] for k in (0, 2) for r in handler({"shard": [k, 3]}, None)}
        assert handler({}, None) == []  # shard 1's were advanced by the batch's invocation
    finally:
        handler.close()
    others = {rid for rid in ids if shard_of(rid, 3) != 1}
    assert 0 < len(others) < len(ids)
    assert rest == dict.fromkeys(others, "now")
