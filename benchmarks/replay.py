"""Replay: how long one invocation takes to replay a run with a long journal.

What it measures: a run that has recorded N trivial side effects and is paused is resumed by
``flow.run()`` on the ``memory:`` backend. The workflow code runs from the top, so all N
side effects are replayed from the journal (none is executed again) before it reaches the next
new pause. The time of that ``flow.run()`` is the replay cost, which the design promises is
O(N): the ratio between N=20,000 and N=10,000 should be about 2 (run.py computes it from
two processes), a quadratic implementation would give 4.

The memory backend keeps storage out of the figure (no file I/O), so what is left is the
engine: journal lookup by position, decoding recorded values, the final checkpoint.

Also reported: the time of the first execution that records the N steps (``build_s``). It is
not a target, but with a checkpoint before every new side effect it shows whether writing a
checkpoint costs O(journal) each time, i.e. O(N^2) for the run.

    python benchmarks/replay.py --steps 10000 --reps 5
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio
from benchutil import emit, log, median, peak_rss_mib

import asyncflow

# Executions of the side effect's body: must be N while building, 0 while replaying.
step_calls = 0


def make_flow() -> Any:
    flow = asyncflow.setup("memory:")

    @flow.sideeffect()
    async def step(c: asyncflow.Context, i: int) -> int:
        global step_calls
        step_calls += 1
        return i

    @flow.workflow()
    async def replay(c: asyncflow.Context, args: dict[str, Any]) -> None:
        for i in range(args["n"]):
            await step(c, i)
        # A recorded pause is passed on replay, so a single pause_once() would let the run
        # finish on the first replay. Looping makes every invocation replay the N steps plus
        # the pauses so far and stop at one new pause: the run stays paused, ready for the
        # next repetition.
        while True:
            await c.pause_once()

    return flow


async def measure(steps: int, reps: int) -> dict[str, Any]:
    global step_calls
    problems: list[str] = []
    # The same Flow object throughout: memory: storage lives in it, a new object starts empty.
    flow = make_flow()
    await flow.start("replay", {"n": steps})

    log(f"build: first execution records {steps} side effects")
    step_calls = 0
    t0 = time.perf_counter()
    results = await flow.run()
    build_s = time.perf_counter() - t0
    if [r.status for r in results] != ["paused"] or step_calls != steps:
        problems.append(
            f"build: statuses {[r.status for r in results]}, step ran {step_calls} times"
        )

    times: list[float] = []
    for rep in range(reps):
        step_calls = 0
        t0 = time.perf_counter()
        results = await flow.run()
        times.append(time.perf_counter() - t0)
        log(f"rep {rep + 1}/{reps}: {times[-1]:.4f} s")
        if [r.status for r in results] != ["paused"] or step_calls != 0:
            problems.append(
                f"rep {rep + 1}: statuses {[r.status for r in results]}, "
                f"step re-executed {step_calls} times (expected 0)"
            )

    return {
        "steps": steps,
        "reps": reps,
        "times_s": times,
        "median_s": median(times),
        "build_s": build_s,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    a = p.parse_args()
    result = anyio.run(measure, a.steps, a.reps, backend=a.loop)
    result["loop"] = a.loop
    emit(result)


if __name__ == "__main__":
    main()
