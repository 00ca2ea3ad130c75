"""The same scenarios on DBOS Transact (``dbos``) with its SQLite journal, for comparison.

Two modes, each the DBOS twin of an asyncflow scenario (the bench session installs ``dbos``
from the package index; it runs on SQLite with no server and no network):

``steps``: one workflow records N trivial steps (``@DBOS.step``, async) in one process; the
time divided by N is DBOS's per-step durable cost (it writes each step's outcome to SQLite
before the next one starts), the twin of ``steps.py`` on asyncflow's file backend.

``fanout``: N workflows, each one 50 ms I/O step (``await asyncio.sleep(0.05)``), started with
``DBOS.start_workflow_async`` and awaited, in one process: the twin of ``fanout.py``. DBOS has
no "pause until the next invocation", so its workflows are started and finished rather than
resumed; each still records its start, its one step and its outcome durably, as asyncflow's
paused runs record their checkpoint.

DBOS is launched once per process (it is a process-wide singleton) on a fresh SQLite file in a
temporary folder; each repetition is a new workflow (or N new ones), so nothing is replayed.

    python benchmarks/vs_dbos.py steps --steps 1000 --reps 3
    python benchmarks/vs_dbos.py fanout --runs 100 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from importlib.metadata import version
from typing import Any

from benchutil import emit, log, median, peak_rss_mib

# Executions of step bodies, to check the work timed is the work claimed (see fanout.py).
calls = 0


def launch(folder: str) -> Any:
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.ERROR)
    DBOS(
        config={
            "name": "asyncflow-bench",
            "system_database_url": f"sqlite:///{folder}/dbos.sqlite",
            "log_level": "ERROR",
            "console_log_level": "ERROR",
        }
    )
    return DBOS


async def measure(mode: str, n: int, reps: int, sleep_s: float) -> dict[str, Any]:
    global calls
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as tmp:
        DBOS = launch(tmp)

        @DBOS.step()
        async def step(i: int) -> int:
            global calls
            calls += 1
            return i

        @DBOS.workflow()
        async def steps(count: int) -> int:
            for i in range(count):
                await step(i)
            return count

        @DBOS.step()
        async def io(i: int) -> int:
            global calls
            calls += 1
            await asyncio.sleep(sleep_s)  # stands in for an HTTP call
            return i

        @DBOS.workflow()
        async def fan(i: int) -> int:
            return int(await io(i))

        DBOS.launch()
        try:
            times: list[float] = []
            threads = 0
            for rep in range(reps):
                calls = 0
                t0 = time.perf_counter()
                if mode == "steps":
                    handle = await DBOS.start_workflow_async(steps, n)
                    got = [await handle.get_result()]
                    want = [n]
                else:
                    handles = [await DBOS.start_workflow_async(fan, i) for i in range(n)]
                    threads = max(threads, threading.active_count())
                    got = [await h.get_result() for h in handles]
                    want = list(range(n))
                times.append(time.perf_counter() - t0)
                if got != want or calls != n:
                    problems.append(f"rep {rep + 1}: results wrong or {calls} step calls, not {n}")
                log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s")
        finally:
            DBOS.destroy()
    return {
        "mode": mode,
        "n": n,
        "reps": reps,
        "times_s": times,
        "median_s": median(times),
        "per_item_s": median(times) / n,
        "threads": threads,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
        "dbos_version": version("dbos"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("steps")
    s.add_argument("--steps", dest="n", type=int, default=1000)
    s.add_argument("--reps", type=int, default=3)
    f = sub.add_parser("fanout")
    f.add_argument("--runs", dest="n", type=int, default=100)
    f.add_argument("--reps", type=int, default=3)
    f.add_argument("--sleep", type=float, default=0.05)
    a = p.parse_args()
    emit(asyncio.run(measure(a.mode, a.n, a.reps, getattr(a, "sleep", 0.05))))


if __name__ == "__main__":
    main()
