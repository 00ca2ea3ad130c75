"""The same scenarios on ttflow 0.6.3, the synchronous library asyncflow replaces.

Two modes, each the ttflow twin of an asyncflow scenario:

``fanout``: N paused runs, each advanced by one 50 ms I/O side effect (``time.sleep(0.05)``,
ttflow side effects are synchronous) and paused again, by one ``client.run()`` on the
``local:`` (JSON file) backend. ttflow runs them one after another, so expect N x 50 ms plus
its overhead; run.py puts this next to ``fanout.py`` at the same N and reports the ratio.

``steps``: one run records N trivial side effects and pauses, in one ``client.run()`` on the
``local:`` (JSON file) backend, a fresh state file per repetition: ttflow's per-step durable
cost, the twin of ``steps.py`` (asyncflow, file) and ``vs_dbos.py steps`` (DBOS, SQLite).

``replay``: one paused run with N recorded side effects, resumed by ``client.run()`` on the
``onmemory`` backend; ttflow looks each step up by scanning the run's whole state, which is
why it is measured at a smaller N than asyncflow.

How the fan-out runs are created: ``client.run(trigger, args)`` creates one run and also
resumes every paused run, so creating N runs that way would advance the first runs up to N
times and leave them with journals up to 2N steps long, unlike asyncflow's runs. Instead one
``spawn`` workflow emits N events (``c.event``, public API) that the same ``client.run()``
processes, one new run each, so every run enters the measured invocation having recorded
exactly one I/O and one pause, as in fanout.py.

ttflow ``print()``s a line per workflow it runs; that output goes to /dev/null.

    python benchmarks/vs_ttflow.py fanout --runs 100 --reps 3
    python benchmarks/vs_ttflow.py replay --steps 2000 --reps 1
    python benchmarks/vs_ttflow.py steps --steps 1000 --reps 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from importlib.metadata import version
from typing import Any

import ttflow
from benchutil import emit, log, median, peak_rss_mib, quiet_stdout

# Executions of side-effect bodies, to check the runs really did the work (see fanout.py).
calls = 0


def make_fanout_client(state_file: str, sleep_s: float) -> ttflow.Client:
    client = ttflow.setup(f"local:{state_file}")

    @client.sideeffect()
    def io(c: ttflow.RunContext) -> None:
        global calls
        calls += 1
        time.sleep(sleep_s)

    @client.workflow(ttflow.event_trigger("fan_start"))
    def fan(c: ttflow.RunContext, args: dict[str, Any]) -> None:
        while True:
            io(c)
            c.pause_once()

    @client.workflow()
    def spawn(c: ttflow.RunContext, args: dict[str, Any]) -> None:
        for i in range(args["n"]):
            c.event("fan_start", {"i": i})

    return client


def check(results: list[Any], runs: int, problems: list[str], when: str) -> None:
    statuses = Counter(r.status for r in results if r.workflow_name == "fan")
    if statuses != Counter({"paused": runs}) or calls != runs:
        problems.append(f"{when}: fan statuses {dict(statuses)}, io ran {calls} times")


def fanout(runs: int, reps: int, sleep_s: float) -> dict[str, Any]:
    global calls
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ttflow-bench-") as tmp:
        state_file = f"{tmp}/state.json"
        client = make_fanout_client(state_file, sleep_s)
        log(f"setup: spawning {runs} runs (ttflow runs their first I/O one by one)")
        calls = 0
        t0 = time.perf_counter()
        with quiet_stdout():
            results = client.run("spawn", {"n": runs})
        setup_s = time.perf_counter() - t0
        check(results, runs, problems, "setup run")

        times: list[float] = []
        for rep in range(reps):
            client = make_fanout_client(state_file, sleep_s)  # a fresh invocation
            calls = 0
            t0 = time.perf_counter()
            with quiet_stdout():
                results = client.run()
            times.append(time.perf_counter() - t0)
            check(results, runs, problems, f"rep {rep + 1}")
            log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s")

    return {
        "runs": runs,
        "reps": reps,
        "sleep_s": sleep_s,
        "times_s": times,
        "median_s": median(times),
        "setup_s": setup_s,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def replay(steps: int, reps: int) -> dict[str, Any]:
    global calls
    problems: list[str] = []
    # One client throughout: the onmemory state lives in it.
    client = ttflow.setup("onmemory")

    @client.sideeffect()
    def step(c: ttflow.RunContext, i: int) -> int:
        global calls
        calls += 1
        return i

    @client.workflow()
    def replay(c: ttflow.RunContext, args: dict[str, Any]) -> None:
        for i in range(args["n"]):
            step(c, i)
        while True:  # same shape as replay.py: stop at one new pause per invocation
            c.pause_once()

    log(f"build: first execution records {steps} side effects")
    calls = 0
    t0 = time.perf_counter()
    with quiet_stdout():
        results = client.run("replay", {"n": steps})
    build_s = time.perf_counter() - t0
    if [r.status for r in results] != ["paused"] or calls != steps:
        problems.append(f"build: statuses {[r.status for r in results]}, step ran {calls}")

    times: list[float] = []
    for rep in range(reps):
        calls = 0
        t0 = time.perf_counter()
        with quiet_stdout():
            results = client.run()
        times.append(time.perf_counter() - t0)
        log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s")
        if [r.status for r in results] != ["paused"] or calls != 0:
            problems.append(
                f"rep {rep + 1}: statuses {[r.status for r in results]}, step re-ran {calls}"
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


def steps(n: int, reps: int) -> dict[str, Any]:
    global calls
    problems: list[str] = []
    times: list[float] = []
    for rep in range(reps):
        with tempfile.TemporaryDirectory(prefix="ttflow-bench-") as tmp:
            client = ttflow.setup(f"local:{tmp}/state.json")

            @client.sideeffect()
            def step(c: ttflow.RunContext, i: int) -> int:
                global calls
                calls += 1
                return i

            @client.workflow()
            def steps(c: ttflow.RunContext, args: dict[str, Any]) -> None:
                for i in range(args["n"]):
                    step(c, i)
                c.pause_once()

            calls = 0
            t0 = time.perf_counter()
            with quiet_stdout():
                results = client.run("steps", {"n": n})
            times.append(time.perf_counter() - t0)
        if [r.status for r in results] != ["paused"] or calls != n:
            problems.append(f"rep {rep + 1}: statuses {[r.status for r in results]}, {calls}")
        log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s")
    return {
        "steps": n,
        "reps": reps,
        "times_s": times,
        "median_s": median(times),
        "per_item_s": median(times) / n,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("--runs", type=int, default=100)
    f.add_argument("--reps", type=int, default=3)
    f.add_argument("--sleep", type=float, default=0.05)
    r = sub.add_parser("replay")
    r.add_argument("--steps", type=int, default=2000)
    r.add_argument("--reps", type=int, default=1)
    s = sub.add_parser("steps")
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--reps", type=int, default=1)
    a = p.parse_args()
    if a.mode == "fanout":
        result = fanout(a.runs, a.reps, a.sleep)
    else:
        result = (replay if a.mode == "replay" else steps)(a.steps, a.reps)
    result["ttflow_version"] = version("ttflow")
    emit(result)


if __name__ == "__main__":
    main()
