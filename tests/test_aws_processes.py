"""Real processes on one S3 prefix or DynamoDB table (moto's server): invocations racing, and
kill -9 while holding leases.

The flow is tests/helpers/aws_proc_worker.py; each real execution of its side effect appends
a line to a per-run journal file, which is how these tests count what really ran.
Synchronisation is by files and process exit only (polled with a bounded deadline), never by
sleeping; lease expiry is reached by running the next invocation with its lease clock moved
forward.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_processes import wait_for

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = pytest.mark.procs

WORKER = Path(__file__).resolve().parent / "helpers" / "aws_proc_worker.py"
STEPS = 5  # aws_proc_worker.STEPS
LEASE = 60  # aws_proc_worker.LEASE


class Worker:
    def __init__(self, tmp_path: Path, aws: Aws, kind: str) -> None:
        self.url = aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url()
        self.env = {**os.environ, "AWS_ENDPOINT_URL": aws.endpoint}
        self.journals = tmp_path / "journals"
        self.journals.mkdir()
        self.logs = tmp_path / "stderr"
        self.logs.mkdir()

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(WORKER), self.url, str(self.journals), *args]

    def popen(self, log: str, *args: str) -> subprocess.Popen[str]:
        with open(self.logs / log, "w") as stderr:
            return subprocess.Popen(
                self.argv(*args), stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env
            )

    def call(self, *args: str) -> list:
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=60, check=False, env=self.env
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def journal(self, run_id: str) -> list[str]:
        path = self.journals / f"{run_id}.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(params=["s3", "dynamodb"])
def worker(request: pytest.FixtureRequest, tmp_path: Path, aws: Aws) -> Worker:
    return Worker(tmp_path, aws, str(request.param))


def test_concurrent_invocations_advance_each_run_exactly_once(worker: Worker) -> None:
    w = worker
    n_runs, n_procs = 16, 4
    ids: list[str] = w.call("start", "tick", str(n_runs))
    first = w.call("run")
    assert sorted(r["run_id"] for r in first) == sorted(ids)
    assert {r["status"] for r in first} == {"paused"}

    procs: list[subprocess.Popen[str]] = []
    try:
        procs = [w.popen(f"race-{i}.txt", "race", str(i)) for i in range(n_procs)]
        wait_for(
            lambda: all((w.journals / f"ready-{i}").exists() for i in range(n_procs)),
            "every racer to be ready",
            procs,
        )
        (w.journals / "go").touch()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
            assert p.stdout is not None
            p.stdout.close()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (w.logs / f"race-{i}.txt").read_text()

    reported = Counter(r["run_id"] for out in outputs for r in json.loads(out))
    assert sorted(reported) == sorted(ids)  # every run advanced...
    assert set(reported.values()) == {1}  # ...by exactly one of the racing invocations
    assert {r["status"] for out in outputs for r in json.loads(out)} == {"succeeded"}
    for rid in ids:
        assert w.journal(rid) == ["step0", "step1"], rid  # no side effect ran twice
    runs = w.call("inspect")
    assert sorted(r["run_id"] for r in runs) == sorted(ids)
    assert {(r["status"], r["result"]) for r in runs} == {("succeeded", "ticked")}


def test_kill_9_holding_leases_its_runs_resume_once_the_leases_expire(worker: Worker) -> None:
    w = worker
    n_runs = 12
    ids: list[str] = w.call("start", "job", str(n_runs))
    blocked = {ids[k]: k % STEPS for k in range(n_runs) if k % 6 != 5}
    crash = w.popen("crash.txt", "crash", str(n_runs))

    def every_run_is_blocked() -> bool:
        new = {p.stem for p in w.journals.glob("*.log")} - set(ids)
        return len(new) == 1 and all(f"step{b}" in w.journal(r) for r, b in blocked.items())

    try:
        wait_for(every_run_is_blocked, "every run to reach its blocking side effect", [crash])
    finally:
        os.kill(crash.pid, signal.SIGKILL)
        crash.wait(timeout=30)
        assert crash.stdout is not None
        crash.stdout.close()
    assert crash.returncode == -signal.SIGKILL, (w.logs / "crash.txt").read_text()
    [new_id] = {p.stem for p in w.journals.glob("*.log")} - set(ids)
    ids.append(new_id)
    blocked[new_id] = n_runs % STEPS
    journals = {rid: w.journal(rid) for rid in ids}

    # Within the lease, another invocation leaves the dead one's blocked runs alone.
    early = w.call("run", str(LEASE / 2))
    assert not {r["run_id"] for r in early} & set(blocked)
    assert {rid: w.journal(rid) for rid in blocked} == {rid: journals[rid] for rid in blocked}

    # Once the leases have expired, the next invocation resumes every one of them (and any
    # run that was not blocked but had not finished at the kill).
    results = w.call("run", str(LEASE + 1))
    assert {r["run_id"] for r in results} >= set(blocked)
    assert {r["status"] for r in results} == {"succeeded"}

    runs = w.call("inspect")
    assert sorted(r["run_id"] for r in runs) == sorted(ids)  # none lost, none invented
    assert {(r["status"], r["result"]) for r in runs} == {
        ("succeeded", f"done {sum(n * n for n in range(STEPS))}")
    }
    for rid in ids:
        executions = Counter(w.journal(rid))
        assert set(executions) == {f"step{n}" for n in range(STEPS)}, executions
        repeated = [s for s, times in executions.items() if times > 1]
        if rid in blocked:
            # Exactly the one in flight at the kill ran again; all before it were recorded.
            assert repeated == [f"step{blocked[rid]}"], executions
            assert executions[f"step{blocked[rid]}"] == 2, executions
        else:
            assert len(repeated) <= 1, executions  # at most the one in flight at the kill
    assert w.call("run", str(LEASE + 1)) == []
