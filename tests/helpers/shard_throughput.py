"""Throughput of n shard processes on S3 (moto's server): the README's figures for
"Past one machine: shards". Not a test (nothing is asserted on time); run as

    python tests/helpers/shard_throughput.py [--store s3|dynamodb|file] [RUNS] [N ...]
        # default: S3, 1000 runs, n = 1 2 4

For each n: a new bucket (table, folder), RUNS runs of tests/helpers/shard_proc_worker.py's `tick`
started and advanced once (to their pause), then n processes started together, shard k of n
each, advance them all by one 50 ms side effect to their next pause. The time is from the
first process's start of its invocation to the last one's end (start-up is not counted).
moto's server runs in a process of its own (`moto_server`, threaded); the CPU time it and the
shard processes used in the timed round is printed beside it.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: test_shard_processes
from test_shard_processes import Shards


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = sys.argv[1:]
    store = "s3"
    if args[:1] == ["--store"]:
        store, args = args[1], args[2:]
    runs = int(args[0]) if args else 1000
    ns = [int(a) for a in args[1:]] or [1, 2, 4]
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
        print(f"{runs} paused runs, each advanced by one 50 ms side effect, on {store}")
        print(f"{'n':>3} {'seconds':>8} {'runs/s':>7} {'client CPU s':>13} {'moto CPU s':>11}")
        for n in ns:
            with tempfile.TemporaryDirectory() as tmp:
                name = f"shards-{uuid.uuid4().hex[:12]}"
                if store == "s3":
                    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
                    url = f"s3://{name}/runs"
                elif store == "dynamodb":
                    from conftest import Aws

                    url = f"dynamodb://{Aws(endpoint).new_table()}"
                else:
                    url = f"file:{tmp}/store"
                shards = Shards(Path(tmp), url, env)
                shards.journals.mkdir()
                shards.call("start", str(runs))
                shards.round(1)  # every run to its first pause (not timed)
                moto_cpu = cpu_seconds(server.pid)
                outputs = shards.round(n)
                moto_cpu = cpu_seconds(server.pid) - moto_cpu
            advanced = Counter(rid for out in outputs for rid in out["advanced"])
            assert len(advanced) == runs
            assert set(advanced.values()) == {1}
            assert all((o["held"], o["conflicts"]) == (0, 0) for o in outputs)
            seconds = max(o["ended"] for o in outputs) - min(o["started"] for o in outputs)
            cpu = sum(o["cpu"] for o in outputs)
            print(
                f"{n:>3} {seconds:>8.1f} {runs / seconds:>7.0f} {cpu:>13.1f} {moto_cpu:>11.1f}",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
