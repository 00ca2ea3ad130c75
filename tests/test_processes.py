"""Real processes on one file backend: kill -9 mid-invocation, and invocations racing.

The flow is tests/helpers/proc_worker.py; each real execution of its side effect appends a line
to a per-run journal file, which is how these tests count what really ran. Synchronisation is by
files and process exit only (polled with a bounded deadline), never by sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.procs

WORKER = Path(__file__).resolve().parent / "helpers" / "proc_worker.py"
STEPS = 5  # proc_worker.STEPS


class Worker:
    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "store"
        self.journals = tmp_path / "journals"
        self.journals.mkdir()
        self.logs = tmp_path / "stderr"
        self.logs.mkdir()

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, str(WORKER), str(self.store), str(self.journals), *args]

    def call(self, *args: str) -> list:
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def journal(self, run_id: str) -> list[str]:
        path = self.journals / f"{run_id}.log"
        return path.read_text().splitlines() if path.exists() else []


def wait_for(
    done: Callable[[], bool], what: str, procs: Sequence[subprocess.Popen], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for p in procs:
            assert p.poll() is None, f"worker exited ({p.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_kill_9_mid_invocation_loses_no_run_and_repeats_at_most_the_side_effect_in_flight(
    tmp_path: Path,
) -> None:
    w = Worker(tmp_path)
    n_runs = 50
    ids: list[str] = w.call("start", "job", str(n_runs))
    assert len(set(ids)) == n_runs
    assert [r["status"] for r in w.call("inspect")] == ["pending"] * n_runs

    # Run k blocks for good inside its side effect number k % 5 (every 6th one never blocks).
    blocked = {ids[k]: k % STEPS for k in range(n_runs) if k % 6 != 5}
    # The crashing invocation also triggers one more run, k = 50: it blocks in its first step.
    with open(w.logs / "crash.txt", "w") as stderr:
        crash = subprocess.Popen(
            w.argv("crash", str(n_runs)), stdout=subprocess.DEVNULL, stderr=stderr
        )

    def every_run_is_blocked() -> bool:
        new = {p.stem for p in w.journals.glob("*.log")} - set(ids)
        return len(new) == 1 and all(f"step{b}" in w.journal(r) for r, b in blocked.items())

    try:
        wait_for(every_run_is_blocked, "every run to reach its blocking side effect", [crash])
    finally:
        os.kill(crash.pid, signal.SIGKILL)
        crash.wait(timeout=30)
    assert crash.returncode == -signal.SIGKILL, (w.logs / "crash.txt").read_text()
    [new_id] = {p.stem for p in w.journals.glob("*.log")} - set(ids)
    ids.append(new_id)
    blocked[new_id] = n_runs % STEPS
    assert blocked[new_id] == 0

    # While the crashed invocation ran, nothing executed past the blocking side effects.
    for rid, b in blocked.items():
        assert w.journal(rid) == [f"step{n}" for n in range(b + 1)]

    # The next invocation, a new process, picks every unfinished run up at once.
    results = w.call("run")
    assert {r["run_id"] for r in results} >= set(blocked)
    assert {r["status"] for r in results} == {"succeeded"}

    runs = w.call("inspect")
    assert sorted(r["run_id"] for r in runs) == sorted(ids)  # none lost, none invented
    expected_result = f"done {sum(n * n for n in range(STEPS))}"
    assert {(r["workflow"], r["status"], r["result"]) for r in runs} == {
        ("job", "succeeded", expected_result)
    }

    for k, rid in enumerate(ids):
        executions = Counter(w.journal(rid))
        assert set(executions) == {f"step{n}" for n in range(STEPS)}, (k, executions)
        repeated = [s for s, times in executions.items() if times > 1]
        assert all(times <= 2 for times in executions.values()), (k, executions)
        if rid in blocked:
            # Exactly the one in flight at the kill ran again; all before it were recorded.
            assert repeated == [f"step{blocked[rid]}"], (k, executions)
        else:
            assert len(repeated) <= 1, (k, executions)

    assert w.call("run") == []  # all finished: nothing runs again


def test_concurrent_invocations_advance_each_run_exactly_once(tmp_path: Path) -> None:
    w = Worker(tmp_path)
    n_runs, n_procs = 100, 4
    ids: list[str] = w.call("start", "tick", str(n_runs))
    first = w.call("run")
    assert sorted(r["run_id"] for r in first) == sorted(ids)
    assert {r["status"] for r in first} == {"paused"}

    procs: list[subprocess.Popen] = []
    try:
        for i in range(n_procs):
            with open(w.logs / f"race-{i}.txt", "w") as stderr:
                procs.append(
                    subprocess.Popen(
                        w.argv("race", str(i)), stdout=subprocess.PIPE, stderr=stderr, text=True
                    )
                )
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
    statuses = {r["status"] for out in outputs for r in json.loads(out)}
    assert statuses == {"succeeded"}

    for rid in ids:
        assert w.journal(rid) == ["step0", "step1"], rid
    runs = w.call("inspect")
    assert sorted(r["run_id"] for r in runs) == sorted(ids)
    assert {(r["status"], r["result"]) for r in runs} == {("succeeded", "ticked")}
