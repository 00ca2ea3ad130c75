"""Durable steps: what recording one side effect costs, in a run that records N in one go.

What it measures: one ``await flow.run()`` that starts a run whose workflow records N trivial
side effects one after another and then pauses, on the file backend (or ``memory:``). Every
side effect is checkpointed before the next one starts, so the time divided by N is the
per-step durable cost; its twins are ``vs_dbos.py steps`` (DBOS on SQLite) and
``vs_ttflow.py steps`` (ttflow's ``local:`` file). run.py runs it at N = 1,000, 10,000 and
20,000: if a checkpoint rewrites the whole record, the cost per step grows with N and 20,000
steps cost about 4x what 10,000 cost (issue 14's goal: at most 2.2x).

Each repetition is a new run in a fresh store (a fresh ``Flow`` on a new folder), so nothing
is replayed: the figure is recording only.

    python benchmarks/steps.py --steps 10000 --reps 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import anyio
from benchutil import emit, log, median, peak_rss_mib

import asyncflow

step_calls = 0


def make_flow(url: str) -> Any:
    flow = asyncflow.setup(url)

    @flow.sideeffect()
    async def step(c: asyncflow.Context, i: int) -> int:
        global step_calls
        step_calls += 1
        return i

    @flow.workflow()
    async def steps(c: asyncflow.Context, args: dict[str, Any]) -> None:
        for i in range(args["n"]):
            await step(c, i)
        await c.pause_once()

    return flow


async def measure(steps: int, reps: int, backend: str) -> dict[str, Any]:
    global step_calls
    problems: list[str] = []
    times: list[float] = []
    for rep in range(reps):
        with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as tmp:
            flow = make_flow("memory:" if backend == "memory" else f"file:{tmp}")
            step_calls = 0
            t0 = time.perf_counter()
            results = await flow.run("steps", {"n": steps})
            times.append(time.perf_counter() - t0)
        if [r.status for r in results] != ["paused"] or step_calls != steps:
            problems.append(
                f"rep {rep + 1}: statuses {[r.status for r in results]}, step ran {step_calls}"
            )
        log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s")
    return {
        "steps": steps,
        "reps": reps,
        "backend": backend,
        "times_s": times,
        "median_s": median(times),
        "per_item_s": median(times) / steps,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--backend", choices=["file", "memory"], default="file")
    p.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    a = p.parse_args()
    result = anyio.run(measure, a.steps, a.reps, a.backend, backend=a.loop)
    result["loop"] = a.loop
    emit(result)


if __name__ == "__main__":
    main()
