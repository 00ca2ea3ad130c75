"""A flow script for the kill -9 tests of tests/test_retry.py and tests/test_branches.py, run
as its own process.

    python tests/helpers/proc_crash_flow.py STORE JOURNAL WORKFLOW [LATER]

One invocation on `file:STORE`, its results printed as JSON; the first invocation (an empty
store) starts WORKFLOW. Every real execution of a side effect appends a line to JOURNAL, so the
test can count what really ran. LATER: seconds added to the clock.

- `fetch_once`: the first attempt of its side effect fails and is retried after an hour, slept
  in the invocation (the test kills the process during that wait).
- `fan`: maps a side effect over 4 items; the first execution of item 3 blocks for good (the
  test kills the process once the 3 others are stored).
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

STORE, JOURNAL, WORKFLOW = Path(sys.argv[1]), anyio.Path(sys.argv[2]), sys.argv[3]
LATER = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0

flow = asyncflow.setup(f"file:{STORE}", clock=lambda: time.time() + LATER)


async def note(line: str) -> int:
    """Append ``line`` to the journal; return how many times it is there now."""
    async with await JOURNAL.open("a") as f:
        await f.write(f"{line}\n")
    return (await JOURNAL.read_text()).splitlines().count(line)


@flow.sideeffect(retry=Retry(attempts=3, initial=3600, jitter=0, durable_after=math.inf))
async def fetch(c: Context) -> str:
    if await note("attempt") == 1:
        raise ConnectionError("first attempt fails")
    return "fetched"


@flow.workflow()
async def fetch_once(c: Context) -> str:
    return await fetch(c)


@flow.sideeffect()
async def step(c: Context, i: int) -> int:
    if await note(f"step{i}") == 1 and i == 3:
        await anyio.sleep_forever()
    return i * i


@flow.workflow()
async def fan(c: Context) -> list[int]:
    return await c.map(step, range(4))


async def main() -> None:
    first = not await anyio.Path(STORE).exists()
    results = await flow.run(WORKFLOW if first else None)
    keys = ("run_id", "status", "result", "error")
    print(json.dumps([{k: getattr(r, k) for k in keys} for r in results]))


if __name__ == "__main__":
    anyio.run(main)
