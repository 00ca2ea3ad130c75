"""A flow script on S3 or DynamoDB for tests/test_aws_processes.py, run as its own process.

    python tests/helpers/aws_proc_worker.py URL JOURNALS start TRIGGER N  # start N runs, print ids
    python tests/helpers/aws_proc_worker.py URL JOURNALS run [SKEW] # one invocation, print results
    python tests/helpers/aws_proc_worker.py URL JOURNALS crash K   # one invocation that also
        # triggers `job` with k=K; every run blocks for good at a chosen step (the test kills
        # the process there)
    python tests/helpers/aws_proc_worker.py URL JOURNALS race I    # write JOURNALS/ready-I, wait
        # for JOURNALS/go, then one invocation, print results
    python tests/helpers/aws_proc_worker.py URL JOURNALS inspect   # print every run

URL is ``s3://bucket/prefix`` or ``dynamodb://table``; the endpoint comes from
AWS_ENDPOINT_URL. Leases last LEASE seconds; SKEW moves this process's lease clock forward, as
if it ran that much later (so a test sees leases expire without waiting for them). Every real
execution of the side effect ``step`` appends ``step<n>`` to JOURNALS/<run_id>.log.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio

import asyncflow
from asyncflow import Context

URL, JOURNALS, MODE = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
STEPS = 5
LEASE = 60.0
SKEW = float(sys.argv[4]) if MODE == "run" and len(sys.argv) > 4 else 0.0


def lease_clock() -> float:
    return time.time() + SKEW


def backend() -> asyncflow.Backend:
    scheme, _, rest = URL.partition("://")
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        return asyncflow.S3Backend(bucket, prefix, lease_seconds=LEASE, clock=lease_clock)
    return asyncflow.DynamoDBBackend(rest, lease_seconds=LEASE, clock=lease_clock)


flow = asyncflow.setup(backend(), max_concurrency=4 if MODE == "race" else 256)


def block_at(k: int) -> int | None:
    """The step at which run number k blocks in `crash` mode (None: it runs to its end)."""
    return None if k % 6 == 5 else k % STEPS


@flow.sideeffect()
async def step(c: Context, n: int, block: int | None) -> int:
    async with await anyio.open_file(JOURNALS / f"{c.run_id}.log", "a") as journal:
        await journal.write(f"step{n}\n")
    if MODE == "crash" and n == block:
        await anyio.sleep_forever()
    return n * n


@flow.workflow()
async def job(c: Context, args: dict) -> str:
    block = block_at(args["k"])
    total = 0
    for n in range(STEPS):
        total += await step(c, n, block)
    return f"done {total}"


@flow.workflow()
async def tick(c: Context) -> str:
    await step(c, 0, None)
    await c.pause_once()
    await step(c, 1, None)
    return "ticked"


def dump(items: list) -> None:
    keys = ("run_id", "workflow", "status", "result", "error")
    print(json.dumps([{k: getattr(item, k) for k in keys} for item in items]))


async def main() -> None:
    async with flow:
        if MODE == "start":
            trigger, n = sys.argv[4], int(sys.argv[5])
            ids: list[str] = []
            for k in range(n):
                ids += await flow.start(trigger, {"k": k} if trigger == "job" else None)
            print(json.dumps(ids))
        elif MODE == "crash":
            dump(await flow.run("job", {"k": int(sys.argv[4])}))
        elif MODE in ("run", "race"):
            dump(await flow.run())
        elif MODE == "inspect":
            dump(await flow.list_runs())
        else:
            raise SystemExit(f"unknown mode {MODE!r}")


def wait_for_go() -> None:
    """`race` mode: say we are ready, then start together with the others."""
    (JOURNALS / f"ready-{sys.argv[4]}").touch()
    deadline = time.monotonic() + 30
    while not (JOURNALS / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go file after 30 s")
        time.sleep(0.001)


if __name__ == "__main__":
    if MODE == "race":
        wait_for_go()
    anyio.run(main)
