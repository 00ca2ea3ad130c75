"""Throughput of n shard processes on S3 (moto's server): the README's figures for
"Past one machine: shards". Not a test (nothing is asserted on time); run as

    python tests/shard_throughput.py [RUNS] [N ...]     # default: 1000 runs, n = 1 2 4

For each n: a new bucket, RUNS runs of tests/shard_proc_worker.py's `tick` started and
advanced once (to their pause), then n processes started together, shard k of n each, advance
them all by one 50 ms side effect to their next pause. The time is from the first process's
start of its invocation to the last one's end (the processes' start-up is not counted).
moto's server runs in a process of its own (`moto_server`, threaded).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_shard_processes import Shards


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ns = [int(a) for a in sys.argv[2:]] or [1, 2, 4]
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    server = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SHARD_JOURNAL": "0",
        "SHARD_SLEEP_MS": "50",
    }
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        s3 = boto3.client("s3", endpoint_url=endpoint)
        print(f"{runs} paused runs, each advanced by one 50 ms side effect, on S3 (moto)")
        print(f"{'n':>3} {'seconds':>8} {'runs/s':>8}  per shard (runs, seconds)")
        for n in ns:
            bucket = f"shards-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            with tempfile.TemporaryDirectory() as tmp:
                shards = Shards(Path(tmp), f"s3://{bucket}/runs", env)
                shards.journals.mkdir()
                shards.call("start", str(runs))
                shards.round(1)  # every run to its first pause (not timed)
                outputs = shards.round(n)
            advanced = Counter(rid for out in outputs for rid in out["advanced"])
            assert len(advanced) == runs
            assert set(advanced.values()) == {1}
            assert all((o["held"], o["conflicts"]) == (0, 0) for o in outputs)
            seconds = max(o["ended"] for o in outputs) - min(o["started"] for o in outputs)
            each = ", ".join(
                f"({len(o['advanced'])}, {o['ended'] - o['started']:.1f})" for o in outputs
            )
            print(f"{n:>3} {seconds:>8.1f} {runs / seconds:>8.0f}  {each}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
