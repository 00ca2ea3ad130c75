"""Fan-out: one invocation advances many paused runs whose next step is slow I/O.

What it measures: the wall time of ONE ``await flow.run()`` on the file backend that finds
N paused runs and advances each by one 50 ms I/O side effect (``await anyio.sleep(0.05)``)
until it pauses again. Sequentially that would take N x 50 ms (500 s for 10,000 runs); the
point of an async runtime is that the waits overlap, so what is left is the engine's own cost
per run (claim, read, replay, checkpoint) plus ``N / max_concurrency`` rounds of 50 ms.

Why it matters: this is the "cron tick" of a deployment, one invocation resuming everything
that is waiting, and it must fit in a Lambda-sized time budget.

Each measured invocation uses a fresh ``Flow`` object, as a new process would, so nothing
cached in memory by the setup helps it. The runs are created with ``flow.start`` and brought
to their first pause by one unmeasured ``flow.run()``; every later invocation advances each
run by exactly one side effect, so the repetitions measure the same work (the journal grows by
two short steps per repetition, which is negligible).

Peak memory is ``ru_maxrss`` of this process (whole process: interpreter, setup and the
measured invocations), which is why run.py gives each scenario its own process.

    python benchmarks/fanout.py --runs 10000 --reps 3 --loop asyncio
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from typing import Any

import anyio
from benchutil import current_rss_mib, emit, log, median, peak_rss_mib

import asyncflow

# Executions of the side effect's body, to check that each measured invocation does exactly
# one I/O per run (no more: a replayed side effect must not run again; no less: every run
# must be advanced). A plain global is fine: everything runs on one event loop thread.
io_calls = 0


def make_flow(url: str, sleep_s: float, max_concurrency: int | None) -> Any:
    """A Flow with the fan-out workflow registered, as a user's script would build it."""
    kwargs = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    flow = asyncflow.setup(url, **kwargs)

    @flow.sideeffect()
    async def io(c: asyncflow.Context) -> None:
        global io_calls
        io_calls += 1
        await anyio.sleep(sleep_s)  # stands in for an HTTP call or a database query

    @flow.workflow()
    async def fan(c: asyncflow.Context, args: dict[str, Any]) -> None:
        # Never finishes: each invocation does one more I/O and pauses again, so the same
        # runs can be advanced by every repetition.
        while True:
            await io(c)
            await c.pause_once()

    return flow


def check(results: list[Any], runs: int, problems: list[str], when: str) -> None:
    """Record (not assert: this is a benchmark) anything that says the work was not done."""
    statuses = Counter(r.status for r in results)
    if statuses != Counter({"paused": runs}):
        problems.append(f"{when}: expected {runs} paused results, got {dict(statuses)}")
    if io_calls != runs:
        problems.append(f"{when}: side effect ran {io_calls} times, expected {runs}")


async def measure(
    runs: int, reps: int, sleep_s: float = 0.05, max_concurrency: int | None = None
) -> dict[str, Any]:
    global io_calls
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as tmp:
        url = f"file:{tmp}"
        flow = make_flow(url, sleep_s, max_concurrency)

        log(f"setup: starting {runs} runs")
        t0 = time.perf_counter()
        # Keep the backend open for the whole setup instead of once per start() call.
        async with flow:
            for i in range(runs):
                await flow.start("fan", {"i": i})
        start_s = time.perf_counter() - t0

        log("setup: first flow.run() to bring every run to its first pause")
        io_calls = 0
        t0 = time.perf_counter()
        results = await flow.run()
        first_run_s = time.perf_counter() - t0
        check(results, runs, problems, "setup run")
        rss_before = current_rss_mib()

        times: list[float] = []
        for rep in range(reps):
            flow = make_flow(url, sleep_s, max_concurrency)  # a fresh invocation
            io_calls = 0
            t0 = time.perf_counter()
            results = await flow.run()
            times.append(time.perf_counter() - t0)
            check(results, runs, problems, f"rep {rep + 1}")
            log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s")

    return {
        "runs": runs,
        "reps": reps,
        "sleep_s": sleep_s,
        "max_concurrency": max_concurrency,
        "times_s": times,
        "median_s": median(times),
        "setup_start_s": start_s,
        "setup_first_run_s": first_run_s,
        "rss_before_measured_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    p.add_argument("--sleep", type=float, default=0.05, help="seconds of I/O per side effect")
    p.add_argument(
        "--max-concurrency", type=int, default=None, help="default: asyncflow.setup()'s own"
    )
    a = p.parse_args()
    result = anyio.run(measure, a.runs, a.reps, a.sleep, a.max_concurrency, backend=a.loop)
    result["loop"] = a.loop
    emit(result)


if __name__ == "__main__":
    main()
