"""A flow script for tests/test_retry.py's crash test, run as its own process.

    python tests/proc_retry_flow.py STORE JOURNAL run [LATER]

One invocation on `file:STORE`, its results printed as JSON. The workflow `fetch_once`
triggers on its first invocation (when the store is empty). Its side effect appends a line
`attempt` to JOURNAL at every real attempt; the first attempt fails and is retried after an
hour, slept in the invocation (the test kills the process during that wait). LATER: seconds
added to the clock, to be past the retry time.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import anyio

import asyncflow
from asyncflow import Context, Retry

STORE, JOURNAL = Path(sys.argv[1]), Path(sys.argv[2])
LATER = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0

flow = asyncflow.setup(f"file:{STORE}", clock=lambda: time.time() + LATER)


@flow.sideeffect(retry=Retry(attempts=3, initial=3600, jitter=0, durable_after=math.inf))
async def fetch(c: Context) -> str:
    journal = anyio.Path(JOURNAL)
    async with await journal.open("a") as f:
        await f.write("attempt\n")
    if (await journal.read_text()).count("attempt") == 1:
        raise ConnectionError("first attempt fails")
    return "fetched"


@flow.workflow()
async def fetch_once(c: Context) -> str:
    return await fetch(c)


async def main() -> None:
    first = not await anyio.Path(STORE).exists()
    results = await flow.run("fetch_once" if first else None)
    keys = ("run_id", "status", "result", "error")
    print(json.dumps([{k: getattr(r, k) for k in keys} for r in results]))


if __name__ == "__main__":
    anyio.run(main)
