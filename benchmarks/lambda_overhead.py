"""Lambda: what the handler adds to an invocation, and what its import costs a cold start.

What it measures:

- **cold import**: the wall time of ``import asyncflow.aws_lambda`` in a fresh interpreter
  (interpreter start-up not included), median over several processes; every cold start of a
  function pays it before its first event. The heavy libraries it pulled in are listed (the
  S3 backend's aiobotocore loads when the backend is opened, not on import).
- **warm overhead**: per invocation, the median time of ``handler(event, context)`` on a warm
  handler minus the median time of ``await flow.run(...)`` called directly inside a running
  loop with the flow entered, for the same one-step workflow on the ``memory:`` backend (so
  that storage does not drown the difference). Two event kinds: a direct invocation
  (``{"trigger": ...}``) and a function URL request (JSON parsing, routing, the response).
  What is left is the thread hop into the handler's event loop and the event handling.
- **first call**: starting the loop thread and opening the backend, paid once per container.

    python benchmarks/lambda_overhead.py --calls 2000 --reps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio
from benchutil import emit, log, median

PROBE = """
import sys, time, json
t = time.perf_counter()
import asyncflow.aws_lambda
dt = time.perf_counter() - t
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"aiobotocore", "botocore", "httpx",
    "uvicorn", "starlette", "trio"})
print(json.dumps({"seconds": dt, "heavy": heavy}))
"""


def cold_import(reps: int) -> dict[str, Any]:
    def once() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    once()  # .pyc files and the OS cache, so that the first rep is not an outlier
    samples = [once() for _ in range(reps)]
    return {
        "times_s": [s["seconds"] for s in samples],
        "median_s": median([s["seconds"] for s in samples]),
        "heavy": sorted({m for s in samples for m in s["heavy"]}),
    }


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 600_000


def make_flow() -> Any:
    import asyncflow

    flow = asyncflow.setup("memory:")

    @flow.workflow()
    async def noop(c: asyncflow.Context) -> int:
        return 1

    return flow


def per_call(fn: Any, calls: int) -> float:
    """Median seconds of one call, from ``calls`` timed calls."""
    samples = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def direct(calls: int) -> float:
    flow = make_flow()
    samples = []
    async with flow:
        for _ in range(calls):
            t = time.perf_counter()
            await flow.run("noop")
            samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()

    import asyncflow.aws_lambda

    problems: list[str] = []
    cold = cold_import(a.reps * 2)
    log(f"cold import: {cold['median_s'] * 1000:.1f} ms, loaded {cold['heavy']}")

    url_event = {
        "version": "2.0",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "body": json.dumps({"trigger": "noop"}),
        "isBase64Encoded": False,
    }
    firsts, directs, invokes, urls = [], [], [], []
    for rep in range(a.reps):
        handler = asyncflow.aws_lambda.handler(make_flow())
        t = time.perf_counter()
        handler({"trigger": "noop"}, Context())
        firsts.append(time.perf_counter() - t)
        invokes.append(per_call(lambda h=handler: h({"trigger": "noop"}, Context()), a.calls))
        answer = handler(url_event, Context())
        if answer["statusCode"] != 200 or json.loads(answer["body"])[0]["result"] != 1:
            problems.append(f"the function URL event was not run: {answer}")
        urls.append(per_call(lambda h=handler: h(url_event, Context()), a.calls))
        handler.close()
        directs.append(anyio.run(direct, a.calls))
        log(
            f"rep {rep + 1}/{a.reps}: direct {directs[-1] * 1e6:.0f} µs, handler"
            f" {invokes[-1] * 1e6:.0f} µs, function URL {urls[-1] * 1e6:.0f} µs,"
            f" first call {firsts[-1] * 1000:.1f} ms"
        )
    base = median(directs)
    emit(
        {
            "calls": a.calls,
            "reps": a.reps,
            "import_median_s": cold["median_s"],
            "import_times_s": cold["times_s"],
            "import_heavy": cold["heavy"],
            "direct_s": base,
            "handler_s": median(invokes),
            "url_s": median(urls),
            "overhead_s": median(invokes) - base,
            "url_overhead_s": median(urls) - base,
            "first_call_s": median(firsts),
            "problems": problems,
        }
    )


if __name__ == "__main__":
    main()
