"""Branches: one run mapping a side effect with I/O over N items, with ``c.map``.

What it measures, on the ``memory:`` backend by default (storage out of the figure):

- ``first_s``: the invocation that executes the N side effects, each waiting ``--io`` seconds
  (a stand-in for a call to a service), concurrently; ``limit`` bounds how many at once.
  Done one after the other they would take ``N * io``.
- ``times_s``: invocations replaying the N branches (nothing executes again), which should cost
  about what replaying N plain side effects does (see replay.py).

    python benchmarks/branches.py --items 1000 --io 0.05 --reps 5 [--backend file:/tmp/b]
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

import anyio
from benchutil import emit, log, median, peak_rss_mib

import asyncflow

calls = 0


def make_flow(url: str, io_s: float, limit: int | None) -> Any:
    flow = asyncflow.setup(url)

    @flow.sideeffect()
    async def fetch(c: asyncflow.Context, i: int) -> int:
        global calls
        calls += 1
        await anyio.sleep(io_s)
        return i

    @flow.workflow()
    async def fan(c: asyncflow.Context, args: dict[str, Any]) -> None:
        got = await c.map(fetch, range(args["n"]), limit=limit)
        assert got == list(range(args["n"]))
        while True:  # stay paused: every invocation replays the branches (see replay.py)
            await c.pause_once()

    return flow


async def measure(
    url: str, items: int, io_s: float, limit: int | None, reps: int
) -> dict[str, Any]:
    global calls
    problems: list[str] = []
    flow = make_flow(url, io_s, limit)
    await flow.start("fan", {"n": items})
    t0 = time.perf_counter()
    results = await flow.run()
    first_s = time.perf_counter() - t0
    log(f"first execution: {first_s:.3f} s")
    if [r.status for r in results] != ["paused"] or calls != items:
        problems.append(f"first: statuses {[r.status for r in results]}, {calls} calls")
    times: list[float] = []
    for rep in range(reps):
        calls = 0
        t0 = time.perf_counter()
        results = await flow.run()
        times.append(time.perf_counter() - t0)
        log(f"replay {rep + 1}/{reps}: {times[-1]:.4f} s")
        if [r.status for r in results] != ["paused"] or calls:
            problems.append(f"replay {rep + 1}: {calls} side effects executed again")
    return {
        "items": items,
        "io_s": io_s,
        "limit": limit,
        "first_s": first_s,
        "sequential_s": items * io_s,
        "times_s": times,
        "median_s": median(times),
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1_000)
    p.add_argument("--io", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    p.add_argument("--backend", default="memory:", help="e.g. file:/tmp/folder (made empty)")
    a = p.parse_args()
    if a.backend.startswith("file:"):
        shutil.rmtree(a.backend[5:], ignore_errors=True)
    result = anyio.run(measure, a.backend, a.items, a.io, a.limit, a.reps, backend=a.loop)
    result["loop"] = a.loop
    result["backend"] = a.backend
    emit(result)


if __name__ == "__main__":
    main()
