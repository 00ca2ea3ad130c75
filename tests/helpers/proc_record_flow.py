"""A flow script for the kill -9 test of tests/test_linear_recording.py, run as its own process.

    python tests/helpers/proc_record_flow.py STORE JOURNAL N LOOP

One invocation on `file:STORE`, on LOOP (asyncio or trio), its results printed as JSON; the
first invocation (an empty store) starts a run of `record`, which records N side effects one
after another (side effect i returns i * i) and returns N. Every real execution of side effect i
appends the line `i` to JOURNAL in one write (O_APPEND): a kill leaves the line whole or absent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

import asyncflow
from asyncflow import Context

STORE, JOURNAL, N, LOOP = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]

flow = asyncflow.setup(f"file:{STORE}")


@flow.sideeffect()
async def step(c: Context, i: int) -> int:
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    return i * i


@flow.workflow()
async def record(c: Context, n: int) -> int:
    for i in range(n):
        await step(c, i)
    return n


async def main() -> None:
    first = not await anyio.Path(STORE).exists()
    results = await flow.run("record", N) if first else await flow.run()
    keys = ("run_id", "status", "result", "error")
    print(json.dumps([{k: getattr(r, k) for k in keys} for r in results]))


if __name__ == "__main__":
    anyio.run(main, backend=LOOP)
