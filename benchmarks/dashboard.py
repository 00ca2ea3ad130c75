"""The dashboard's runs page with many runs in the store (file backend, asyncio).

What it measures: the request the runs page makes (``GET /dashboard/api/runs``, 50 runs a
page, newest first, with the counts by status), answered by the ASGI app through httpx's
ASGI transport, with N runs stored (paused in ``c.sleep``, one step each):

- ``cold_s``: the first request of a fresh app (a new process or Lambda container): it lists
  the store and reads every record once to summarise it;
- ``warm_s``: a later request: two listings, then only the records whose version changed are
  read (none here), then a sort and a page;
- ``filtered_s``: a later request with a status, workflow and run-id filter, on the last page;
- ``cold_filtered_s``: that filtered request as the first of a fresh app (it reads every
  record: the filters look into them);
- ``page_s``: the page itself (``GET /``: the HTML).

    python benchmarks/dashboard.py --runs 10000 --reps 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import anyio
import httpx
from benchutil import emit, log, median, peak_rss_mib

import asyncflow
import asyncflow.asgi


def make_flow(url: str) -> Any:
    flow = asyncflow.setup(url)

    @flow.workflow()
    async def nap(c: asyncflow.Context) -> None:
        await c.sleep(3600)

    return flow


async def timed(http: httpx.AsyncClient, path: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    answer = await http.get(path)
    elapsed = time.perf_counter() - t0
    answer.raise_for_status()
    return elapsed, answer


async def main(runs: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"file:{folder}"
        flow = make_flow(url)
        log(f"storing {runs:,} runs")
        t0 = time.perf_counter()
        for _ in range(runs):
            await flow.start("nap")
        await flow.run()  # each now sleeps: a paused record with one step
        log(f"setup {time.perf_counter() - t0:.1f} s")
        problems: list[str] = []
        cold, warm, filtered, page, cold_filtered = [], [], [], [], []
        for _ in range(reps):
            app = asyncflow.asgi.app(make_flow(url))  # a fresh app: no summaries yet
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                seconds, answer = await timed(http, "/dashboard/api/runs")
                cold.append(seconds)
                body = answer.json()
                if body["total"] != runs or len(body["runs"]) != 50:
                    problems.append(f"listed {body['total']} runs, {len(body['runs'])} shown")
                for _ in range(3):
                    warm.append((await timed(http, "/dashboard/api/runs"))[0])
                last = (runs - 1) // 50 + 1
                query = f"status=paused&workflow=nap&wait=time&q=0&page={last}"
                filtered.append((await timed(http, f"/dashboard/api/runs?{query}"))[0])
                page.append((await timed(http, "/"))[0])
            # A first request that filters on what records hold must read every record.
            app = asyncflow.asgi.app(make_flow(url))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                cold_filtered.append((await timed(http, f"/dashboard/api/runs?{query}"))[0])
        result = {
            "runs": runs,
            "reps": reps,
            "cold_s": median(cold),
            "warm_s": median(warm),
            "filtered_s": median(filtered),
            "page_s": median(page),
            "cold_filtered_s": median(cold_filtered),
            "times_s": cold,
            "peak_rss_mib": peak_rss_mib(),
            "problems": problems,
        }
        log(
            ", ".join(
                f"{k} {v * 1000:.0f} ms"
                for k, v in result.items()
                if isinstance(v, float) and k.endswith("_s")
            )
        )
        emit(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.runs, args.reps)
