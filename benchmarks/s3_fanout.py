"""Watched runs on every store: one invocation advances many paused runs (issue 14's scenario).

What it measures: the wall time of ONE ``await flow.run()`` that finds N paused runs and
advances each by one 50 ms I/O side effect until it pauses again (the scenario of fanout.py),
on the S3 or DynamoDB backend against moto's server, or on the file or memory backend, on
asyncio or trio; how many HTTP requests each run cost (counted with botocore's ``before-send``
event, retries included), and the CPU time this process spent (asyncflow, botocore, httpx:
the client's share; the rest of the wall time is waiting for the store). Also the time of the
N ``flow.start()`` calls that create the runs (issue 14's goal 2), made from
``--start-concurrency`` tasks at once (1 = one after another), and the unmeasured-so-far
first ``flow.run()`` that brings every run to its first pause. ``--start-concurrency 0``:
one ``flow.start_many()`` of them all instead.

``--profile FILE`` runs the last measured invocation under cProfile and dumps the stats
there (``python -m pstats FILE``), to see where an invocation's time goes.

Why it matters: requests are what a deployment on S3 pays for, per run and per invocation;
and the wall time says what part of the time budget the store takes.

moto's server runs in its own process (on 127.0.0.1), so that its work does not share this
process's interpreter lock: the figures are the client's cost plus moto's answer time, which
is slower than S3's own per request but without S3's network latency.

    python benchmarks/s3_fanout.py --backend s3 --runs 1000 --reps 3
    python benchmarks/s3_fanout.py --backend file --runs 100000 --reps 1 --loop trio
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from benchutil import emit, log, median, peak_rss_mib

import asyncflow

io_calls = 0


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in a child process on a free port of 127.0.0.1; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import logging; logging.getLogger('werkzeug').setLevel(logging.ERROR);"
        "from moto.server import ThreadedMotoServer;"
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False);"
        "s.start(); s._thread.join()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


def aws_env(endpoint: str) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )


def create_store(kind: str) -> str:
    """A fresh bucket or table on the endpoint in the environment; its name."""
    import boto3

    name = f"bench-{uuid.uuid4().hex[:12]}"
    if kind == "s3":
        boto3.client("s3").create_bucket(Bucket=name)
    else:
        boto3.client("dynamodb").create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "ns", "AttributeType": "S"},
                {"AttributeName": "name", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "ns", "KeyType": "HASH"},
                {"AttributeName": "name", "KeyType": "RANGE"},
            ],
        )
    return name


class Requests:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def session(self) -> Any:
        from aiobotocore.session import get_session

        session = get_session()
        session.register("before-send", self._count)
        return session

    def _count(self, event_name: str, **_: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1


def make_flow(kind: str, where: Any, requests: Requests, sleep_s: float, packs: int = 0) -> Any:
    backend: Any
    if kind == "memory":
        backend = where  # one MemoryBackend object: the store lives in it
    elif kind == "s3":
        backend = asyncflow.S3Backend(where, "bench", session=requests.session())
    elif kind == "dynamodb":
        backend = asyncflow.DynamoDBBackend(where, session=requests.session())
    else:
        backend = f"file:{where}"
    if packs:  # the runs kept in packs (asyncflow.PackedBackend)
        backend = asyncflow.PackedBackend(
            asyncflow.setup(backend).backend if isinstance(backend, str) else backend,
            packs=packs,
        )
    flow = asyncflow.setup(backend)

    @flow.sideeffect()
    async def io(c: asyncflow.Context) -> None:
        global io_calls
        io_calls += 1
        await anyio.sleep(sleep_s)

    @flow.workflow()
    async def fan(c: asyncflow.Context, args: dict[str, Any]) -> None:
        while True:
            await io(c)
            await c.pause_once()

    return flow


def check(results: list[Any], runs: int, problems: list[str], when: str) -> None:
    statuses = Counter(r.status for r in results)
    if statuses != Counter({"paused": runs}):
        problems.append(f"{when}: expected {runs} paused results, got {dict(statuses)}")
    if io_calls != runs:
        problems.append(f"{when}: side effect ran {io_calls} times, expected {runs}")


async def start_all(flow: Any, runs: int, concurrency: int) -> None:
    """``runs`` calls of ``flow.start``, from ``concurrency`` tasks at once; with
    ``concurrency`` 0, one ``flow.start_many`` of them all."""
    if concurrency == 0:
        await flow.start_many("fan", [{"i": i} for i in range(runs)])
        return
    next_i = iter(range(runs))

    async def worker() -> None:
        for i in next_i:  # one shared iterator: each index is started once
            await flow.start("fan", {"i": i})

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, runs)):
            tg.start_soon(worker)


async def measure(
    kind: str,
    where: Any,
    runs: int,
    reps: int,
    sleep_s: float,
    start_concurrency: int = 1000,
    profile: str | None = None,
    packs: int = 0,
) -> dict[str, Any]:
    global io_calls
    problems: list[str] = []
    requests = Requests()
    flow = make_flow(kind, where, requests, sleep_s, packs)
    log(f"setup: starting {runs} runs on {kind} from {start_concurrency} tasks")
    async with flow:
        requests.counts.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        await start_all(flow, runs, start_concurrency)
        start_s, start_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        start_requests = sum(requests.counts.values())
    log(f"setup: {runs} starts took {start_s:.3f} s; first flow.run()")
    io_calls = 0
    t0 = time.perf_counter()
    check(await flow.run(), runs, problems, "setup run")
    first_run_s = time.perf_counter() - t0

    times: list[float] = []
    cpu: list[float] = []
    per_run: list[dict[str, float]] = []
    for rep in range(reps):
        requests.counts.clear()
        flow = make_flow(kind, where, requests, sleep_s, packs)  # a fresh invocation
        io_calls = 0
        profiler = None
        if profile and rep == reps - 1:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        results = await flow.run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        check(results, runs, problems, f"rep {rep + 1}")
        per_run.append({op: n / runs for op, n in sorted(requests.counts.items())})
        log(f"rep {rep + 1}/{reps}: {times[-1]:.3f} s, requests {dict(requests.counts)}")
    return {
        "backend": kind,
        "runs": runs,
        "reps": reps,
        "times_s": times,
        "median_s": median(times),
        "cpu_s": median(cpu),
        "cpu_per_run_s": median(cpu) / runs,
        "requests_per_run": per_run[-1] if per_run else {},
        "requests_per_run_total": sum(per_run[-1].values()) if per_run else 0.0,
        "start_s": start_s,
        "start_cpu_s": start_cpu_s,
        "start_concurrency": start_concurrency,
        "start_requests_per_run": start_requests / runs,
        "setup_first_run_s": first_run_s,
        "profiled": bool(profile),
        "packs": packs,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["s3", "dynamodb", "file", "memory"], default="s3")
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    p.add_argument("--sleep", type=float, default=0.05, help="seconds of I/O per side effect")
    p.add_argument(
        "--start-concurrency", type=int, default=1000, help="tasks calling flow.start at once"
    )
    p.add_argument("--profile", default=None, help="cProfile the last rep into this file")
    p.add_argument("--packs", type=int, default=0, help="keep the runs in this many packs")
    a = p.parse_args()
    opts = (a.runs, a.reps, a.sleep, a.start_concurrency, a.profile, a.packs)
    if a.backend == "file":
        with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as tmp:
            result = anyio.run(measure, "file", tmp, *opts, backend=a.loop)
    elif a.backend == "memory":
        result = anyio.run(measure, "memory", asyncflow.MemoryBackend(), *opts, backend=a.loop)
    else:
        with moto_server() as endpoint:
            aws_env(endpoint)
            where = create_store(a.backend)
            result = anyio.run(measure, a.backend, where, *opts, backend=a.loop)
    result["loop"] = a.loop
    emit(result)


if __name__ == "__main__":
    main()
