"""The flow script of the fault-injection campaign (tests/faults/campaign.py), run as its own
process, which the campaign kills with SIGKILL at random moments.

    python tests/faults/worker.py STORE JOURNALS invoker SECONDS   # start runs, invoke, repeat
    python tests/faults/worker.py STORE JOURNALS emitter SECONDS   # emit the events runs await
    python tests/faults/worker.py STORE JOURNALS check             # one clean invocation, print
        # every run (JSON, "before"); then settle: emit to every waiting run and invoke, until
        # no run is left active (at most 10 rounds); print every run again ("after")

STORE is ``file:PATH``, ``s3://bucket/prefix`` or ``dynamodb://table`` (endpoint from
AWS_ENDPOINT_URL; leases of LEASE seconds). Every real execution of a side effect of run N
appends its tag to JOURNALS/n-N.log; every run started is logged in JOURNALS/started-PID.log
once `start` returned; every emit is logged in JOURNALS/emits-PID.log before it is sent (with
the time) and once `emit` returned. The campaign checks the store against these logs.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import asyncflow
from asyncflow import Context
from asyncflow._record import stored_json

STORE, JOURNALS, MODE = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
LEASE = 3.0
WAITS = 2  # each run waits for its event twice


def backend() -> asyncflow.Backend | str:
    url, _, packs = STORE.partition("?packs=")
    scheme, _, rest = url.partition("://")
    inner: asyncflow.Backend | str
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        inner = asyncflow.S3Backend(bucket, prefix, lease_seconds=LEASE)
    elif scheme == "dynamodb":
        inner = asyncflow.DynamoDBBackend(rest, lease_seconds=LEASE)
    else:
        inner = url
    if not packs:
        return inner
    if isinstance(inner, str):
        inner = asyncflow.setup(inner).backend
    return asyncflow.PackedBackend(inner, packs=int(packs), lease_seconds=LEASE)


flow = asyncflow.setup(backend())


def append(name: str, line: str) -> None:
    """One line, in one write (O_APPEND): a kill leaves it whole or absent."""
    fd = os.open(JOURNALS / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@flow.sideeffect()
async def effect(c: Context, n: str, tag: str) -> str:
    append(f"n-{n}.log", tag)
    await anyio.sleep(random.random() * 0.01)  # a little real work, for kills to land in
    return tag


@flow.workflow()
async def job(c: Context, args: dict[str, Any]) -> dict[str, Any]:
    n = args["n"]
    received = []
    await effects(c, n, "a0")
    for i in range(WAITS):
        received.append(await c.wait_event(f"go-{n}"))
        await effects(c, n, f"b{i}")
    return {"n": n, "received": received}


async def effects(c: Context, n: str, tag: str) -> None:
    """Three side effects in a row: the checkpoints between them append to the record (on the
    file backend), so that kills land in appends too."""
    for suffix in ("", ".1", ".2"):
        await effect(c, n, tag + suffix)


async def invoker(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    seq = 0
    async with flow:
        while not stopping(deadline):
            if random.random() < 0.3 and seq < 40:
                for _ in range(random.randint(1, 2)):
                    seq += 1
                    n = f"{os.getpid()}x{seq}"
                    [run_id] = await flow.start("job", {"n": n})
                    append(f"started-{os.getpid()}.log", f"{n} {run_id}")
            await flow.run()
            await anyio.sleep(random.random() * 0.05)


def stopping(deadline: float) -> bool:
    """Past the deadline, or the campaign is over (it wrote JOURNALS/stop)."""
    return time.monotonic() >= deadline or (JOURNALS / "stop").exists()


def progress(n: str) -> list[str]:
    try:
        return (JOURNALS / f"n-{n}.log").read_text().split()
    except FileNotFoundError:
        return []


async def emit(n: str, seq: int, invoke: bool = True) -> None:
    log = f"emits-{os.getpid()}.log"
    append(log, f"start {n} {seq} {time.time_ns() // 1_000_000}")
    args = {"n": n, "by": os.getpid(), "seq": seq}
    if invoke:
        await flow.emit(f"go-{n}", args)
    else:
        await flow._deliver(f"go-{n}", args)  # (settling: one invocation for all, after)
    append(log, f"done {n} {seq}")


async def emitter(seconds: float) -> None:
    """Emit go-N once to each wait of each run, a random moment (up to 80 ms) after the run
    announced it is about to wait (a side effect's line): often while the wait is being
    recorded, sometimes before it began (that emit does not count for the wait)."""
    deadline = time.monotonic() + seconds
    seq = 0
    due: dict[tuple[str, int], float] = {}  # (run, wait) -> when to emit; -1 once emitted
    async with flow, anyio.create_task_group() as tg:
        while not stopping(deadline):
            now = time.monotonic()
            for path in JOURNALS.glob("n-*.log"):  # noqa: ASYNC240  (a test's scan, tiny)
                n = path.name[2:-4]
                tags = progress(n)
                stage = sum(1 for i in range(WAITS) if f"b{i}" in tags)
                if stage < WAITS and (n, stage) not in due:
                    due[(n, stage)] = now + random.uniform(0.0, 0.08)
            for key, when in due.items():
                if 0 <= when <= time.monotonic():
                    due[key] = -1
                    seq += 1
                    # Each on its own (none waits for another); half of them deliver only, as
                    # the SQS path does, half also invoke, as `flow.emit` does.
                    tg.start_soon(emit, key[0], seq, seq % 2 == 0)
            await anyio.sleep(0.002)


async def main() -> None:
    if MODE == "invoker":
        await invoker(float(sys.argv[4]))
    elif MODE == "emitter":
        await emitter(float(sys.argv[4]))
    elif MODE == "run":
        async with flow:
            await flow.run()
    elif MODE == "check":
        async with flow:
            await flow.run()  # one clean invocation: repairs what the kills left
            before = await dump()
            await settle()
            print(json.dumps({"before": before, "after": await dump()}))


async def settle() -> None:
    for seq in range(1, 11):
        runs = [r for r in await dump() if r["status"] in ("pending", "paused")]
        if not runs:
            return
        for run in runs:
            if any("event" not in w and not w.get("timed_out") for w in run["waits"]):
                await emit(run["args"]["n"], -seq, invoke=False)
        await flow.run()


async def dump() -> list[dict[str, Any]]:
    """Every run, with its wait steps as stored (read from the records themselves)."""
    be = flow.backend
    out = []
    for namespace in ("active", "finished"):
        keys = [(namespace, name) for name in await be.list(namespace)]
        for entry in await be.read_many(keys):
            if entry is None:
                continue
            raw = stored_json(entry.data)  # (with any steps appended to it)
            waits = [s for s in raw["steps"] if s.get("kind") == "wait_event"]
            out.append(
                {
                    "run_id": raw["run_id"],
                    "status": raw["status"],
                    "args": raw["args"],
                    "result": raw["result"],
                    "error": raw["error"],
                    "waits": waits,
                }
            )
    return out


anyio.run(main)
