"""A flow script for tests/test_shard_processes.py (and the throughput figures of the README's
"Past one machine: shards"), run as its own process, one per shard.

    python tests/helpers/shard_proc_worker.py URL JOURNALS start N    # start N `tick` runs
    python tests/helpers/shard_proc_worker.py URL JOURNALS shard K N
        # write JOURNALS/ready-K, wait for JOURNALS/go, one invocation of shard K of N
        # (N = 0: unsharded); print what it did
    python tests/helpers/shard_proc_worker.py URL JOURNALS inspect    # print every run

URL is ``file:<folder>``, ``s3://bucket/prefix`` or ``dynamodb://table`` (the endpoint from
AWS_ENDPOINT_URL). Each real execution of the side effect ``step`` appends ``step<n>`` to
JOURNALS/<run_id>.log unless SHARD_JOURNAL=0; it sleeps SHARD_SLEEP_MS milliseconds (default 0).

``shard`` prints ``{"advanced": [run ids], "held": H, "conflicts": C, "started": t0,
"ended": t1, "cpu": seconds}``: H counts the due runs this invocation found held by another
(a lost claim, as the engine reports it to its observer), C the runs it lost to another
invocation's write (the engine's "changed by another invocation" warning).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import anyio

import asyncflow
from asyncflow import Context
from asyncflow._telemetry import OBSERVER, Observer

URL, JOURNALS, MODE = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
SLEEP = float(os.environ.get("SHARD_SLEEP_MS", "0")) / 1000
JOURNAL = os.environ.get("SHARD_JOURNAL", "1") != "0"

flow = asyncflow.setup(URL)


@flow.sideeffect()
async def step(c: Context, n: int) -> int:
    if JOURNAL:
        async with await anyio.open_file(JOURNALS / f"{c.run_id}.log", "a") as journal:
            await journal.write(f"step{n}\n")
    if SLEEP:
        await anyio.sleep(SLEEP)
    return n


@flow.workflow()
async def tick(c: Context) -> str:
    await step(c, 0)
    await c.pause_once()
    await step(c, 1)
    await c.pause_once()
    return "ticked"


class Counting(Observer):
    def __init__(self) -> None:
        self.held = 0

    def held_elsewhere(self, runs: int) -> None:
        self.held += runs


class Conflicts(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "changed by another invocation" in record.getMessage():
            self.count += 1


async def start(n: int) -> None:
    limiter = anyio.CapacityLimiter(32)
    ids: list[str] = []

    async def one() -> None:
        async with limiter:
            ids.extend(await flow.start("tick"))

    async with flow, anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    print(json.dumps(ids))


async def shard(k: int, n: int) -> None:
    counting, conflicts = Counting(), Conflicts()
    logging.getLogger("asyncflow").addHandler(conflicts)
    OBSERVER.set(counting)
    async with flow:  # opened before the go: the figures time the invocation alone
        wait_for_go(k)
        started, cpu = time.time(), time.process_time()
        results = await flow.run(shard=None if n == 0 else (k, n))
        ended, cpu = time.time(), time.process_time() - cpu
    print(
        json.dumps(
            {
                "advanced": [r.run_id for r in results],
                "statuses": sorted({r.status for r in results}),
                "held": counting.held,
                "conflicts": conflicts.count,
                "started": started,
                "ended": ended,
                "cpu": cpu,
            }
        )
    )


def wait_for_go(k: int) -> None:
    """Say we are ready, then start together with the others (files, no sleeping on time)."""
    (JOURNALS / f"ready-{k}").touch()
    deadline = time.monotonic() + 120
    while not (JOURNALS / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go file after 120 s")
        time.sleep(0.001)


async def inspect() -> None:
    runs = await flow.list_runs()
    print(json.dumps([{"run_id": r.run_id, "status": r.status} for r in runs]))


if __name__ == "__main__":
    if MODE == "start":
        anyio.run(start, int(sys.argv[4]))
    elif MODE == "shard":
        anyio.run(shard, int(sys.argv[4]), int(sys.argv[5]))
    elif MODE == "inspect":
        anyio.run(inspect)
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
