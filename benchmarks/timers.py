"""Timers and events: what a sleeping run costs an invocation, and what waking waiters costs.

What it measures, on the file backend (each invocation with a fresh ``Flow``, as a new process):

- ``skip_s``: one ``await flow.run()`` that finds N runs asleep in ``c.sleep(3600)``, none due.
  The wait index lets it skip them from one listing, without claiming or reading a record.
- ``paused_s``: for comparison, one ``flow.run()`` over N runs paused by ``pause_once`` (each
  is claimed, read, replayed and stored again): what the same runs would cost without timers.
- ``emit_s``: one ``await flow.emit("go")`` that wakes W runs waiting in ``c.wait_event("go")``
  (each record is updated by compare-and-swap, then every run resumes in the same
  invocation and finishes).

    python benchmarks/timers.py --runs 10000 --waiters 1000 --reps 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import anyio
from benchutil import emit, log, median, peak_rss_mib

import asyncflow
from asyncflow.testing import MockClock


def make_flow(url: str, clock: MockClock) -> Any:
    flow = asyncflow.setup(url, clock=clock)

    @flow.workflow()
    async def nap(c: asyncflow.Context) -> None:
        await c.sleep(3600)

    @flow.workflow()
    async def lap(c: asyncflow.Context) -> None:
        while True:
            await c.pause_once()

    @flow.workflow()
    async def wait(c: asyncflow.Context) -> Any:
        return await c.wait_event("go")

    return flow


async def timed_invocations(
    url: str, clock: MockClock, reps: int, call: str, *args: Any
) -> tuple[list[float], list[Any]]:
    times, last = [], []
    for _ in range(reps):
        flow = make_flow(url, clock)
        t0 = time.perf_counter()
        last = await getattr(flow, call)(*args)
        times.append(time.perf_counter() - t0)
    return times, last


async def measure(runs: int, waiters: int, reps: int) -> dict[str, Any]:
    problems: list[str] = []
    clock = MockClock()
    result: dict[str, Any] = {"runs": runs, "waiters": waiters, "reps": reps}
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as tmp:
        url = f"file:{tmp}/sleep"
        setup = make_flow(url, clock)
        for _ in range(runs):
            await setup.start("nap")
        await setup.run()
        log(f"{runs} runs asleep")
        times, last = await timed_invocations(url, clock, reps, "run")
        if last:
            problems.append(f"a run due before its time was advanced: {len(last)} results")
        result["skip_s"] = median(times)

        url = f"file:{tmp}/paused"
        setup = make_flow(url, clock)
        for _ in range(runs):
            await setup.start("lap")
        await setup.run()
        times, last = await timed_invocations(url, clock, reps, "run")
        if len(last) != runs:
            problems.append(f"expected {runs} paused runs advanced, got {len(last)}")
        result["paused_s"] = median(times)

        emit_times = []
        for rep in range(reps):
            url = f"file:{tmp}/wait{rep}"
            setup = make_flow(url, clock)
            for _ in range(waiters):
                await setup.start("wait")
            await setup.run()
            times, last = await timed_invocations(url, clock, 1, "emit", "go", rep)
            done = [r for r in last if r.status == "succeeded" and r.result == rep]
            if len(done) != waiters:
                problems.append(f"emit woke {len(done)} of {waiters} waiting runs")
            emit_times += times
        result["emit_s"] = median(emit_times)
    result["peak_rss_mib"] = peak_rss_mib()
    result["problems"] = problems
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--waiters", type=int, default=1_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loop", choices=("asyncio", "trio"), default="asyncio")
    a = p.parse_args()
    result = anyio.run(measure, a.runs, a.waiters, a.reps, backend=a.loop)
    log(
        f"skip {result['skip_s']:.3f} s, paused {result['paused_s']:.3f} s,"
        f" emit {result['emit_s']:.3f} s"
    )
    emit(result)


if __name__ == "__main__":
    main()
