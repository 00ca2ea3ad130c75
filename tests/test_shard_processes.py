"""n real processes, one per shard, started together on one store (a folder, or S3 and
DynamoDB on moto's server): every due run advanced by exactly one of them, no claim lost.

The flow is tests/helpers/shard_proc_worker.py; each real execution of its side effect appends
a line to a per-run journal file, which is how these tests count what really ran. The
processes start together on a file (no sleeping as synchronisation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_processes import wait_for

from asyncflow._shard import shard_of

pytestmark = pytest.mark.procs

WORKER = Path(__file__).resolve().parent / "helpers" / "shard_proc_worker.py"


class Shards:
    def __init__(self, tmp_path: Path, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = {**os.environ, **env}
        self.journals = tmp_path / "journals"
        self.logs = tmp_path / "stderr"
        self.tmp_path = tmp_path

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(WORKER), self.url, str(self.journals), *args]

    def call(self, *args: str) -> Any:
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=120, env=self.env
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def round(self, n: int) -> list[dict[str, Any]]:
        """n processes, shard k of n each (n = 0: one unsharded), started together."""
        for path in (self.journals, self.logs):
            path.mkdir(exist_ok=True)
        (self.journals / "go").unlink(missing_ok=True)
        for ready in self.journals.glob("ready-*"):
            ready.unlink()
        procs: list[subprocess.Popen[str]] = []
        try:
            for k in range(max(n, 1)):
                with open(self.logs / f"shard-{k}.txt", "w") as stderr:
                    procs.append(
                        subprocess.Popen(
                            self.argv("shard", str(k), str(n)),
                            stdout=subprocess.PIPE,
                            stderr=stderr,
                            text=True,
                            env=self.env,
                        )
                    )
            wait_for(
                lambda: all((self.journals / f"ready-{k}").exists() for k in range(len(procs))),
                "every shard to be ready",
                procs,
                timeout=60,
            )
            (self.journals / "go").touch()
            outputs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=30)
                assert p.stdout is not None
                p.stdout.close()
        for k, p in enumerate(procs):
            assert p.returncode == 0, (self.logs / f"shard-{k}.txt").read_text()
        return [json.loads(out) for out in outputs]

    def journal(self, run_id: str) -> list[str]:
        path = self.journals / f"{run_id}.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(
    params=[
        "file",
        pytest.param("s3", marks=pytest.mark.aws),
        pytest.param("dynamodb", marks=pytest.mark.aws),
    ]
)
def shards(request: pytest.FixtureRequest, tmp_path: Path) -> Shards:
    if request.param == "file":
        return Shards(tmp_path, f"file:{tmp_path / 'store'}", {})
    aws = request.getfixturevalue("aws")
    url = aws.new_s3_url() if request.param == "s3" else aws.new_dynamodb_url()
    return Shards(tmp_path, url, {"AWS_ENDPOINT_URL": aws.endpoint})


def test_n_processes_one_per_shard_advance_every_run_once_without_contention(
    shards: Shards,
) -> None:
    s, n = shards, 4
    s.journals.mkdir()
    ids: list[str] = s.call("start", "24")
    while len({shard_of(rid, n) for rid in ids}) < n:  # every shard has work (ids are random)
        ids += s.call("start", "4")
    assert len(set(ids)) == len(ids)
    # Two rounds: the runs start (a side effect, a pause), then resume (another, a pause).
    for round_, journal in enumerate([["step0"], ["step0", "step1"]]):
        outputs = s.round(n)
        advanced = Counter(rid for out in outputs for rid in out["advanced"])
        assert sorted(advanced) == sorted(ids), round_  # every run advanced...
        assert set(advanced.values()) == {1}, round_  # ...by exactly one of the processes
        for k, out in enumerate(outputs):
            assert {shard_of(rid, n) for rid in out["advanced"]} <= {k}  # its own share
            assert out["statuses"] == ["paused"]
            # No contention: no due run found held by another, none lost to another's write.
            assert (out["held"], out["conflicts"]) == (0, 0), (round_, k, out)
        for rid in ids:
            assert s.journal(rid) == journal, rid  # no side effect ran twice
    runs = s.call("inspect")
    assert sorted(r["run_id"] for r in runs) == sorted(ids)
    assert {r["status"] for r in runs} == {"paused"}
