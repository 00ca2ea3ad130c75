"""Fault injection with real processes: invokers and emitters of one flow run at once on one
store while this driver kills one of them with SIGKILL at random moments, then checks the store
against what the processes logged.

    python tests/faults/campaign.py --store file --kills 100 --seconds 300
    python tests/faults/campaign.py --store s3 --kills 50          # on moto's server
    python tests/faults/campaign.py --store dynamodb --kills 50

Each run (tests/faults/worker.py) executes three side effects in a row (the checkpoints
between them append to the record on the file backend), waits for its event ``go-N``,
executes three more, waits again, executes three more. Invokers start runs and invoke in a loop;
the emitter emits ``go-N`` to runs that announced they are about to wait, at once (to meet
the wait while it is being recorded) and again later. The report (JSON, one line):

- ``kills``: SIGKILLs sent (``kills_invoker``, ``kills_emitter``);
- ``runs``: runs started (``start`` returned); ``runs_lost``: of those, missing from the store;
- ``emits``: emits completed; ``waits_owed_an_event``: waits that an emit of their event
  which completed after they began (by the emitter's clock taken before it emitted, a whole
  millisecond after the wait's start) must have reached; ``events_lost``: of those, the ones
  still waiting after one clean invocation;
- ``wrong_events``: events received that no emitter sent to that run, or sent before the wait;
- ``runs_stuck``: runs not succeeded once settled (every waiting run emitted to, invoked);
- ``duplicates``: side-effect executions beyond the first; ``max_duplicates_per_run``.

The invariants: no run lost, no event lost or wrong, no run stuck, and duplicates only where a
kill interrupted a side effect: at most one per run per kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
LEASE = 3.0  # (as in worker.py)
AWS_STARTUP = 1.5  # seconds a worker takes to import aiobotocore and open its client


class Campaign:
    def __init__(self, store: str, folder: Path, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.journals = folder / "journals"
        self.journals.mkdir(parents=True, exist_ok=True)
        self.logs = folder / "logs"
        self.logs.mkdir(exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.spawned = 0

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        self.spawned += 1
        with open(self.logs / f"{self.spawned}-{argv[0]}.txt", "wb") as out:
            return subprocess.Popen(
                [sys.executable, str(WORKER), self.store, str(self.journals), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    def call(self, *argv: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, str(WORKER), self.store, str(self.journals), *argv],
            capture_output=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"worker {argv} failed:\n{done.stdout.decode()}{done.stderr.decode()}"
            )
        return done.stdout.decode()

    def errors(self) -> list[str]:
        """Tracebacks the workers printed (a killed worker prints nothing)."""
        return [
            p.read_text()
            for p in sorted(self.logs.iterdir())
            if "Traceback" in p.read_text(errors="replace")
        ]


def run_campaign(
    store: str,
    folder: Path,
    *,
    kills: int,
    seconds: float,
    invokers: int = 2,
    env: dict[str, str] | None = None,
    leases: bool = False,
    startup: float = 0.5,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run one campaign; return its report. Stops after ``kills`` kills or ``seconds``."""
    rng = random.Random(seed)
    c = Campaign(store, folder, env)
    began = time.monotonic()
    deadline = began + seconds
    roles = ["invoker"] * invokers + ["emitter"]
    procs = [c.spawn(role, str(seconds)) for role in roles]
    born = [time.monotonic()] * len(procs)
    killed: Counter[str] = Counter()
    while sum(killed.values()) < kills and time.monotonic() < deadline - 1:
        # An emitter or an invoker, even odds, at a random moment once it is under way (a
        # process killed while it imports Python modules tests nothing).
        i = len(procs) - 1 if rng.random() < 0.5 else rng.randrange(len(procs) - 1)
        time.sleep(max(born[i] + startup - time.monotonic(), 0) + rng.uniform(0.1, 2 * startup))
        if procs[i].poll() is None:
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            killed[roles[i]] += 1
        left = deadline - time.monotonic()
        if left > 1:
            procs[i] = c.spawn(roles[i], f"{left:.1f}")
            born[i] = time.monotonic()
    (c.journals / "stop").touch()  # the rest end by themselves
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed["late"] += 1
    if leases:
        time.sleep(LEASE + 0.5)  # the leases of killed invokers expire (wall-clock leases)
    stored = json.loads(c.call("check"))
    report = check(c.journals, stored["before"], stored["after"])
    report.update(
        store=store.partition(":")[0],
        url=store,
        seconds=round(time.monotonic() - began, 1),
        kills=sum(killed.values()),
        kills_invoker=killed["invoker"],
        kills_emitter=killed["emitter"],
        worker_errors=len(c.errors()),
    )
    return report


def _lines(journals: Path, pattern: str) -> list[list[str]]:
    return [
        line.split()
        for path in sorted(journals.glob(pattern))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def check(
    journals: Path, before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> dict[str, Any]:
    started = dict(_lines(journals, "started-*.log"))
    sent: dict[tuple[str, str, str], int] = {}  # (n, pid, seq) -> time (ms) before emitting
    completed: set[tuple[str, str, str]] = set()
    for path in journals.glob("emits-*.log"):
        pid = path.name[6:-4]
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start" and len(parts) == 4:
                sent[(parts[1], pid, parts[2])] = int(parts[3])
            elif parts[0] == "done" and len(parts) == 3:
                completed.add((parts[1], pid, parts[2]))
    # Events lost: a wait still pending after the clean invocation, although an emit of its
    # event completed after it began (and before the settling emits, whose seq is negative).
    events_lost = owed = 0
    for run in before:
        n = run["args"]["n"]
        for wait in run["waits"]:
            since_ms = int(wait["since"][:11], 16)
            if any(
                key[0] == n and not key[2].startswith("-") and sent[key] > since_ms
                for key in completed
                if key in sent
            ):
                owed += 1  # (a wait an emit that completed after it began must have reached)
                if "event" not in wait and not wait.get("timed_out"):
                    events_lost += 1
    by_id = {run["run_id"]: run for run in after}
    runs_lost = sum(1 for run_id in started.values() if run_id not in by_id)
    runs_stuck = sum(
        1
        for run_id in started.values()
        if run_id in by_id and by_id[run_id]["status"] != "succeeded"
    )
    wrong = 0
    received = 0
    for run in after:
        n = run["args"]["n"]
        for wait in run["waits"]:
            if "event" not in wait:
                continue
            received += 1
            value = wait.get("value") or {}
            key = (str(value.get("n")), str(value.get("by")), str(value.get("seq")))
            if key[0] != n or key not in sent or wait["event"] <= wait["since"]:
                wrong += 1
    duplicates: Counter[str] = Counter()
    for path in journals.glob("n-*.log"):
        tags = Counter(path.read_text().split())
        duplicates[path.name[2:-4]] = sum(count - 1 for count in tags.values())
    return {
        "runs": len(started),
        "runs_lost": runs_lost,
        "runs_stuck": runs_stuck,
        "emits": sum(1 for key in completed if not key[2].startswith("-")),
        "events_received": received,
        "waits_owed_an_event": owed,
        "events_lost": events_lost,
        "wrong_events": wrong,
        "duplicates": sum(duplicates.values()),
        "max_duplicates_per_run": max(duplicates.values(), default=0),
    }


def holds(report: dict[str, Any]) -> bool:
    """The campaign's invariants."""
    return (
        report["runs_lost"] == 0
        and report["runs_stuck"] == 0
        and report["events_lost"] == 0
        and report["wrong_events"] == 0
        and report["max_duplicates_per_run"] <= max(report["kills"], 0)
        and report["worker_errors"] == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store",
        choices=["file", "s3", "dynamodb", "packed-file", "packed-s3", "packed-dynamodb"],
        default="file",
        help="packed-*: the runs kept in 4 packs (asyncflow.PackedBackend) of that store",
    )
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--invokers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        packs = "?packs=4" if args.store.startswith("packed-") else ""
        args.store = args.store.removeprefix("packed-")
        if args.store == "file":
            report = run_campaign(
                f"file:{folder}/store{packs}",
                Path(folder),
                leases=bool(packs),  # (packs keep leases: a killed holder's expire)
                kills=args.kills,
                seconds=args.seconds,
                invokers=args.invokers,
                seed=args.seed,
            )
        else:
            report = _on_moto(args, Path(folder), packs)
        for error in Campaign(report["url"], Path(folder)).errors():
            print(error, file=sys.stderr)  # (the folder goes with the campaign)
    print(json.dumps(report))
    sys.exit(0 if holds(report) else 1)


def _on_moto(args: argparse.Namespace, folder: Path, packs: str = "") -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent.parent))  # tests/: conftest's moto server
    import logging

    from conftest import Aws, _atomic_moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    os.environ.update(credentials)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    server = _atomic_moto_server()
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = Aws(f"http://{host}:{port}")
        url = aws.new_s3_url() if args.store == "s3" else aws.new_dynamodb_url()
        return run_campaign(
            url + packs,
            folder,
            kills=args.kills,
            seconds=args.seconds,
            invokers=args.invokers,
            env={**credentials, "AWS_ENDPOINT_URL": aws.endpoint},
            leases=True,
            startup=AWS_STARTUP,
            seed=args.seed,
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
