"""Shards: n processes at once, each ``flow.run(shard=(k, n))``, share N watched runs (issue 14's
goal 3, "past one machine").

What it measures: N paused runs (the watched-runs scenario of s3_fanout.py: each run's next
step is one 50 ms I/O side effect, then ``pause_once`` again) are advanced by n operating-system
processes started together, process k running one ``await flow.run(shard=(k, n))``; for each n
of ``--n``, one round on the same store (every round advances every run once more). A round's
time runs from the first process's start of its invocation to the last one's end: interpreter
start-up, imports and opening the backend come before a common "go" (a file), so the figure is
the invocations' own. Throughput is N / that time; on this machine it can grow with n until
the cores are the limit (one process is one core).

What it checks, per round, from what the processes report: the union of what they advanced is
every run, each exactly once, each in its own shard; each run's side effect body executed
exactly once in all the processes together (none twice, none skipped: each process lists the
runs whose body it executed); no process found a due run held by another (the engine's
``held_elsewhere``) or lost one to another's write (its "changed by another invocation"
warning): a disjoint share means no contended claim.

The runs are created with one ``start_many`` and brought to their first pause by one unsharded
``flow.run()`` in this process (not timed as a round). On S3 the store is moto's server in a
process of its own, as for s3_fanout.py (DynamoDB too), and the requests each round cost are
counted. moto's server shares this machine's cores with the shard processes: on S3 and
DynamoDB the rounds say whether sharding is correct and what it costs per run, less what it
would gain where the store is elsewhere.
With ``--packs P`` the runs are kept in P packs (``asyncflow.PackedBackend``, goal 1's layout
on S3 and DynamoDB): for n dividing P, shard k of n owns whole packs, so no two processes
write one pack, and a shard's requests scale with its packs, not its runs.

On the file backend all the processes write to one disk, and each makes its writes durable
with ``syncfs``, which flushes the whole file system (the others' writes too): the disk, not
the cores, can be what limits the rounds (``TMPDIR=/dev/shm`` shows the cores' share).

    python benchmarks/shards.py --backend file --runs 20000 --n 1 2 4
    python benchmarks/shards.py --backend s3 --runs 20000 --packs 256 --n 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import s3_fanout as watched  # moto's server, a bucket, request counting
from benchutil import emit, log, peak_rss_mib

import asyncflow
from asyncflow._shard import shard_of
from asyncflow._telemetry import OBSERVER, Observer

SLEEP_S = 0.05

# The run ids whose side effect body this process executed, once per execution.
executed: list[str] = []


def make_flow(kind: str, where: str, requests: watched.Requests, packs: int) -> asyncflow.Flow:
    """s3_fanout.py's watched-runs flow, its side effect also noting which run it ran for;
    with ``packs``, the runs kept in that many packs (shard k of n owns whole packs when n
    divides it)."""
    backend: Any = f"file:{where}"
    if kind == "s3":
        backend = asyncflow.S3Backend(where, "bench", session=requests.session())
    elif kind == "dynamodb":
        backend = asyncflow.DynamoDBBackend(where, session=requests.session())
    if packs:
        inner = asyncflow.setup(backend).backend if isinstance(backend, str) else backend
        backend = asyncflow.PackedBackend(inner, packs=packs)
    flow = asyncflow.setup(backend)

    @flow.sideeffect()
    async def io(c: asyncflow.Context) -> None:
        executed.append(c.run_id)
        await anyio.sleep(SLEEP_S)  # stands in for an HTTP call or a database query

    @flow.workflow()
    async def fan(c: asyncflow.Context, args: dict[str, Any]) -> None:
        while True:
            await io(c)
            await c.pause_once()

    return flow


# -- a shard process ---------------------------------------------------------------------------


class Held(Observer):
    """Counts the due runs this invocation found held by another (claims contended)."""

    def __init__(self) -> None:
        self.runs = 0

    def held_elsewhere(self, runs: int) -> None:
        self.runs += runs


class Conflicts(logging.Handler):
    """Counts the runs this invocation lost to another invocation's write."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "changed by another invocation" in record.getMessage():
            self.count += 1


def wait_for_go(sync: Path, k: int) -> None:
    """Say this process is ready, then start with the others when the go file appears."""
    (sync / f"ready-{k}").touch()
    deadline = time.monotonic() + 300
    while not (sync / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go file after 300 s")
        time.sleep(0.001)


async def shard_process(
    kind: str, where: str, packs: int, k: int, n: int, sync: Path
) -> dict[str, Any]:
    requests = watched.Requests()
    flow = make_flow(kind, where, requests, packs)
    held, conflicts = Held(), Conflicts()
    logging.getLogger("asyncflow").addHandler(conflicts)
    OBSERVER.set(held)
    async with flow:  # opened before the go: the round times the invocations alone
        requests.counts.clear()
        wait_for_go(sync, k)
        started, cpu = time.time(), time.process_time()
        results = await flow.run(shard=(k, n))
        ended, cpu = time.time(), time.process_time() - cpu
    return {
        "advanced": [r.run_id for r in results],
        "statuses": dict(Counter(r.status for r in results)),
        "executed": executed,
        "held": held.runs,
        "conflicts": conflicts.count,
        "started": started,
        "ended": ended,
        "cpu_s": cpu,
        "requests": sum(requests.counts.values()),
        "peak_rss_mib": peak_rss_mib(),
    }


# -- the rounds --------------------------------------------------------------------------------


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU time of the whole machine so far, all cores (Linux's /proc/stat):
    whether a round left cores idle, whoever used them (the shards, moto's server, others)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle, iowait
    return float(sum(ticks) - idle), float(sum(ticks))


async def set_up(
    kind: str, where: str, packs: int, runs: int, problems: list[str]
) -> dict[str, Any]:
    """N runs started and brought to their first pause, unsharded, in this process."""
    flow = make_flow(kind, where, watched.Requests(), packs)
    async with flow:
        t0 = time.perf_counter()
        ids: list[str] = await flow.start_many("fan", [{"i": i} for i in range(runs)])
        start_s = time.perf_counter() - t0
        log(f"setup: {runs:,} runs started in {start_s:.2f} s; first flow.run()")
        t0 = time.perf_counter()
        results = await flow.run()
        first_run_s = time.perf_counter() - t0
    log(f"setup: first flow.run() {first_run_s:.2f} s")
    statuses = Counter(r.status for r in results)
    if statuses != Counter({"paused": runs}) or sorted(executed) != sorted(ids):
        problems.append(f"setup run: {dict(statuses)}, {len(executed)} side effects executed")
    return {"ids": ids, "start_s": start_s, "first_run_s": first_run_s}


def one_round(
    kind: str, where: str, packs: int, n: int, ids: list[str], problems: list[str]
) -> dict[str, Any]:
    """n shard processes started together; what they did, checked."""
    with tempfile.TemporaryDirectory(prefix="asyncflow-shards-") as tmp:
        sync = Path(tmp)
        argv = [sys.executable, __file__, "shard", kind, where, str(packs), str(n), str(sync)]
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([*argv, str(k)], stdout=subprocess.PIPE, text=True) for k in range(n)
        ]
        try:
            deadline = time.monotonic() + 300
            while not all((sync / f"ready-{k}").exists() for k in range(n)):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"n={n}: a shard process did not get ready (see above)")
                time.sleep(0.01)
            cpu_before = machine_cpu()
            (sync / "go").touch()
            outputs = [p.communicate(timeout=1800)[0] for p in procs]
            cpu_after = machine_cpu()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        processes_s = time.perf_counter() - t0
    reports: list[dict[str, Any]] = []
    for k, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        if p.returncode != 0:
            raise RuntimeError(f"n={n}: shard process {k} exited with {p.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))

    runs = len(ids)
    when = f"n={n}"
    advanced = Counter(rid for r in reports for rid in r["advanced"])
    if set(advanced) != set(ids):
        problems.append(
            f"{when}: {len(set(ids) - set(advanced))} runs not advanced,"
            f" {len(set(advanced) - set(ids))} unknown runs advanced"
        )
    twice = sum(1 for c in advanced.values() if c > 1)
    if twice:
        problems.append(f"{when}: {twice} runs advanced by more than one process")
    for k, r in enumerate(reports):
        foreign = sum(1 for rid in r["advanced"] if shard_of(rid, n) != k)
        if foreign:
            problems.append(f"{when}: shard {k} advanced {foreign} runs of other shards")
        if set(r["statuses"]) - {"paused"}:
            problems.append(f"{when}: shard {k} results {r['statuses']}, expected all paused")
    executions = Counter(rid for r in reports for rid in r["executed"])
    if set(executions) != set(ids) or set(executions.values()) != {1}:
        problems.append(
            f"{when}: side effects executed {executions.total()} times for"
            f" {len(executions)} of {runs} runs; {sum(c > 1 for c in executions.values())}"
            " runs executed more than once"
        )
    held = sum(r["held"] for r in reports)
    conflicts = sum(r["conflicts"] for r in reports)
    if held or conflicts:
        problems.append(f"{when}: {held} claims held elsewhere, {conflicts} runs lost to a write")
    seconds = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    busy = None  # the share of the machine's cores busy during the round (to the last exit)
    if cpu_before and cpu_after and cpu_after[1] > cpu_before[1]:
        busy = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
    result = {
        "n": n,
        "seconds": seconds,
        "runs_per_s": runs / seconds,
        "per_process": [
            {"runs": len(r["advanced"]), "seconds": r["ended"] - r["started"], "cpu_s": r["cpu_s"]}
            for r in reports
        ],
        "cpu_s": sum(r["cpu_s"] for r in reports),
        "held": held,
        "conflicts": conflicts,
        "advanced_twice": twice,
        "requests_per_run": sum(r["requests"] for r in reports) / runs,
        "processes_s": processes_s,  # spawning to the last exit, start-up included
        "machine_busy": busy,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in reports),
    }
    log(
        f"n={n}: {seconds:.2f} s, {runs / seconds:,.0f} runs/s, CPU {result['cpu_s']:.1f} s,"
        f" held {held}, conflicts {conflicts} (processes {processes_s:.1f} s in all),"
        f" cores busy {'?' if busy is None else f'{busy:.0%}'}"
    )
    return result


def measure(kind: str, where: str, packs: int, runs: int, ns: list[int]) -> dict[str, Any]:
    problems: list[str] = []
    setup = anyio.run(set_up, kind, where, packs, runs, problems)
    ids = setup["ids"]
    rounds = [one_round(kind, where, packs, n, ids, problems) for n in ns]
    return {
        "backend": kind,
        "runs": runs,
        "packs": packs,
        "ns": ns,
        "rounds": rounds,
        "start_s": setup["start_s"],
        "setup_first_run_s": setup["first_run_s"],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in rounds) if rounds else peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    if sys.argv[1:2] == ["shard"]:  # one shard process (started by one_round)
        kind, where, packs, n, sync, k = sys.argv[2:8]  # (S3: the endpoint from the environment)
        report = anyio.run(shard_process, kind, where, int(packs), int(k), int(n), Path(sync))
        print(json.dumps(report), flush=True)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["file", "s3", "dynamodb"], default="file")
    p.add_argument("--runs", type=int, default=20_000)
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4], help="processes per round")
    p.add_argument("--packs", type=int, default=0, help="keep the runs in this many packs")
    a = p.parse_args()
    if a.backend == "file":
        with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as tmp:
            result = measure("file", tmp, a.packs, a.runs, a.n)
    else:
        with watched.moto_server() as endpoint:
            watched.aws_env(endpoint)  # the shard processes inherit it
            result = measure(a.backend, watched.create_store(a.backend), a.packs, a.runs, a.n)
    emit(result)


if __name__ == "__main__":
    main()
