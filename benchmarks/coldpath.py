"""Cold path: a fresh process's ``setup("s3://…")`` plus its first request, against the
import of aiobotocore itself.

What it measures, each in fresh interpreters (median over several; interpreter start-up not
included), against moto's server in another process:

- ``aiobotocore import``: importing what the S3 backend needs from aiobotocore (session,
  config, httpx session), nothing else;
- ``plain aiobotocore``: those imports, a session, an S3 client on the httpx session, and one
  ``ListObjectsV2`` — what any aiobotocore user pays before the first answer;
- ``asyncflow``: ``import asyncflow``, ``asyncflow.setup("s3://bucket/prefix")`` and one
  ``flow.run()`` over an empty prefix (one ``ListObjectsV2``), timed in three parts.

Why it matters: a Lambda cold start or a CLI call pays this before doing anything; the target
is that asyncflow adds no more than the aiobotocore import itself on top of ``import
asyncflow``.

    python benchmarks/coldpath.py --reps 7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from benchutil import emit, log, median
from s3_fanout import aws_env, create_store, moto_server

IMPORT_ONLY = """
import time, json
t = time.perf_counter()
import aiobotocore.session, aiobotocore.config, aiobotocore.httpxsession
print(json.dumps({"total": time.perf_counter() - t}))
"""

PLAIN = """
import time, json, sys
t = time.perf_counter()
import anyio
import aiobotocore.session, aiobotocore.config, aiobotocore.httpxsession
async def main():
    config = aiobotocore.config.AioConfig(http_session_cls=aiobotocore.httpxsession.HttpxSession)
    session = aiobotocore.session.get_session()
    async with session.create_client("s3", config=config) as client:
        await client.list_objects_v2(Bucket=sys.argv[1], Prefix="p/active/")
anyio.run(main)
print(json.dumps({"total": time.perf_counter() - t}))
"""

ASYNCFLOW = """
import time, json, sys
t0 = time.perf_counter()
import asyncflow
import anyio
t1 = time.perf_counter()
flow = asyncflow.setup(f"s3://{sys.argv[1]}/p")
t2 = time.perf_counter()
assert anyio.run(flow.run) == []
t3 = time.perf_counter()
print(json.dumps({"total": t3 - t0, "import": t1 - t0, "setup": t2 - t1, "first": t3 - t2}))
"""


def probe(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    a = p.parse_args()
    with moto_server() as endpoint:
        aws_env(endpoint)
        bucket = create_store("s3")
        runs: dict[str, list[dict[str, float]]] = {"import": [], "plain": [], "asyncflow": []}
        for rep in range(a.reps):
            # Interleaved, so that a busy moment of the machine hits all three alike.
            runs["import"].append(probe(IMPORT_ONLY))
            runs["plain"].append(probe(PLAIN, bucket))
            runs["asyncflow"].append(probe(ASYNCFLOW, bucket))
            log(
                f"rep {rep + 1}/{a.reps}: "
                + ", ".join(f"{k} {v[-1]['total']:.3f} s" for k, v in runs.items())
            )
    med: dict[str, Any] = {
        name: {part: median([r[part] for r in rs]) for part in rs[0]} for name, rs in runs.items()
    }
    added = med["asyncflow"]["total"] - med["asyncflow"]["import"]
    problems = []
    if os.environ.get("AWS_ENDPOINT_URL") != endpoint:
        problems.append("the probes did not run against moto")
    emit(
        {
            "reps": a.reps,
            "aiobotocore_import_s": med["import"]["total"],
            "plain_aiobotocore_s": med["plain"]["total"],
            "asyncflow_total_s": med["asyncflow"]["total"],
            "asyncflow_import_s": med["asyncflow"]["import"],
            "asyncflow_setup_s": med["asyncflow"]["setup"],
            "asyncflow_first_request_s": med["asyncflow"]["first"],
            "added_after_import_s": added,
            "problems": problems,
        }
    )


if __name__ == "__main__":
    main()
