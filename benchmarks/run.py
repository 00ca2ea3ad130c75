"""Run every benchmark, print a Markdown table, optionally put it in README.md.

Each scenario runs in its own Python process (see the scenario modules beside this file), so
that its peak-memory figure is its own and one scenario's garbage cannot slow the next one.
A scenario that crashes, times out or reports a sanity problem (the work it timed was not
the work it claims) is shown as such in the table and makes this script exit with status 1;
timings are reported, never asserted.

    python benchmarks/run.py                 # full sizes, prints the table
    python benchmarks/run.py --quick         # scaled down, a smoke test of the whole thing
    python benchmarks/run.py --write-readme  # also replace the README's benchmarks section
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

from benchutil import RESULT_PREFIX, log

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = ROOT / "README.md"
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; --quick only changes these, never what is measured."""

    fanout_runs: int
    fanout_reps: int
    vs_runs: int
    vs_reps: int
    replay_steps: int  # the larger size is twice this
    replay_reps: int
    tt_replay_steps: int
    import_reps: int
    branch_items: int
    aws_runs: int
    aws_reps: int
    cold_reps: int
    lambda_calls: int = 2_000  # invocations timed per rep (lambda_overhead.py)
    lambda_reps: int = 5
    # Issue 14's scenarios. Durable steps: asyncflow (file) at each size; DBOS (SQLite) and
    # ttflow (local file) at the smaller sizes only: DBOS pays a few ms per step, flat with
    # length (20,000 would add minutes and say nothing new), and ttflow is quadratic.
    steps: tuple[int, ...] = (1_000, 10_000, 20_000)
    steps_reps: int = 3
    dbos_steps: tuple[int, ...] = (1_000, 10_000)
    tt_steps: int = 1_000
    # Fan-out side by side (one 50 ms step per workflow): asyncflow at each size (the largest
    # is fanout_runs), DBOS up to dbos_fanout_max (DBOS took ~506 s and 10,000 threads for
    # 10,000 here: capped so that the session stays near 30 minutes; --dbos-fanout-max
    # raises it), ttflow at vs_runs only (it runs workflows one after another: N x 50 ms).
    vs_fanout: tuple[int, ...] = (100, 1_000)
    dbos_fanout_max: int = 1_000
    # 100,000 watched runs in one invocation (file on asyncio and trio, memory) and the
    # 100,000 starts that create them; S3 and DynamoDB at aws_runs (the per-run figures;
    # 100,000 would take ~20 minutes each today: --aws-runs 100000 runs it).
    watched_runs: int = 100_000
    watched_reps: int = 1
    # Shards (goal 3): the same watched runs advanced by n processes at once, one
    # `flow.run(shard=(k, n))` each, one round per n; on S3 and DynamoDB (moto's server, which
    # shares the cores with the shard processes) fewer runs, in 256 packs as goal 1's layout
    # (shard k of n owns whole packs), and n = 1, 2 only, to stay cheap.
    shard_runs: int = 20_000
    shard_ns: tuple[int, ...] = (1, 2, 4)
    shard_aws_runs: int = 20_000
    shard_aws_ns: tuple[int, ...] = (1, 2)


FULL = Sizes(10_000, 3, 100, 3, 10_000, 5, 2_000, 10, 1_000, 1_000, 3, 7)
QUICK = Sizes(
    1_000, 1, 20, 1, 1_000, 3, 300, 5, 200, 100, 1, 3, lambda_calls=300, lambda_reps=2,
    steps=(200, 1_000, 2_000), steps_reps=1, dbos_steps=(200, 1_000), tt_steps=200,
    vs_fanout=(20, 100), dbos_fanout_max=100, watched_runs=2_000, shard_runs=2_000,
    shard_aws_runs=1_000,
)  # fmt: skip
WATCHED_GOAL = 100_000  # issue 14's size for goals 1 and 2


@dataclass
class Outcome:
    """One scenario process: its figures, or why there are none."""

    name: str
    result: dict[str, Any] | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result is not None and not self.problems


def run_scenario(name: str, argv: list[str], timeout: float) -> Outcome:
    """Run one scenario script in a fresh interpreter and parse its BENCH-RESULT line."""
    log(f"--- {name}: {' '.join(argv)}")
    env = dict(os.environ)
    # Import asyncflow from this checkout even where it is not installed (it is, editable, in
    # the dev venv and in nox; then this changes nothing).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / argv[0]), *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=None,  # progress lines go straight to our stderr
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, error=f"timed out after {timeout:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        return Outcome(name, error=f"exit status {proc.returncode} (traceback above)")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return Outcome(name, result=result, problems=list(result.get("problems", [])))


def fanout_sizes(sizes: Sizes) -> list[int]:
    """The fan-out sizes compared side by side: vs_fanout and the 10,000 of fanout-asyncio."""
    return sorted({*sizes.vs_fanout, sizes.vs_runs, sizes.fanout_runs})


def fanout_name(n: int, sizes: Sizes) -> str:
    """The scenario that measured asyncflow's fan-out of n runs on asyncio."""
    if n == sizes.fanout_runs:
        return "fanout-asyncio"
    return "vs-asyncflow" if n == sizes.vs_runs else f"vs-asyncflow-{n}"


def run_all(
    sizes: Sizes, timeout: float, skip: set[str], only: list[str] | None = None
) -> dict[str, Outcome]:
    plan: dict[str, list[str]] = {
        "fanout-asyncio": [
            "fanout.py", f"--runs={sizes.fanout_runs}", f"--reps={sizes.fanout_reps}",
            "--loop=asyncio",
        ],
        "fanout-trio": [
            "fanout.py", f"--runs={sizes.fanout_runs}", f"--reps={sizes.fanout_reps}",
            "--loop=trio",
        ],
        "vs-asyncflow": [
            "fanout.py", f"--runs={sizes.vs_runs}", f"--reps={sizes.vs_reps}", "--loop=asyncio",
        ],
        "vs-ttflow": [
            "vs_ttflow.py", "fanout", f"--runs={sizes.vs_runs}", f"--reps={sizes.vs_reps}",
        ],
        "replay-1x": [
            "replay.py", f"--steps={sizes.replay_steps}", f"--reps={sizes.replay_reps}",
        ],
        "replay-2x": [
            "replay.py", f"--steps={2 * sizes.replay_steps}", f"--reps={sizes.replay_reps}",
        ],
        "replay-ttflow": [
            "vs_ttflow.py", "replay", f"--steps={sizes.tt_replay_steps}", "--reps=1",
        ],
        "branches": [
            "branches.py", f"--items={sizes.branch_items}", f"--reps={sizes.replay_reps}",
        ],
        "import": ["importtime.py", f"--reps={sizes.import_reps}"],
        "lambda": [
            "lambda_overhead.py", f"--calls={sizes.lambda_calls}", f"--reps={sizes.lambda_reps}",
        ],
        "timers": [
            "timers.py", f"--runs={sizes.fanout_runs}",
            f"--waiters={sizes.fanout_runs // 10}", f"--reps={sizes.fanout_reps}",
        ],
        **{
            f"aws-fanout-{kind}": [
                "s3_fanout.py", f"--backend={kind}", f"--runs={sizes.aws_runs}",
                "--start-concurrency=0",
                f"--reps={sizes.aws_reps}",
            ]
            for kind in ("file", "s3", "dynamodb")
        },
        # Issue 14: durable steps, fan-out side by side, watched runs.
        **{
            f"steps-{n}": ["steps.py", f"--steps={n}", f"--reps={sizes.steps_reps}"]
            for n in sizes.steps
        },
        **{
            f"steps-dbos-{n}": ["vs_dbos.py", "steps", f"--steps={n}",
                                f"--reps={sizes.steps_reps if n < 10_000 else 1}"]
            for n in sizes.dbos_steps
        },
        "steps-ttflow": ["vs_ttflow.py", "steps", f"--steps={sizes.tt_steps}", "--reps=1"],
        **{
            f"vs-asyncflow-{n}": [
                "fanout.py", f"--runs={n}", f"--reps={sizes.vs_reps}", "--loop=asyncio",
            ]
            for n in sizes.vs_fanout if n != sizes.vs_runs
        },
        **{
            f"vs-dbos-{n}": ["vs_dbos.py", "fanout", f"--runs={n}", f"--reps={sizes.vs_reps}"]
            for n in fanout_sizes(sizes) if n <= sizes.dbos_fanout_max
        },
        **{
            f"watched-{kind}": [
                "s3_fanout.py", f"--backend={kind.split('-')[0]}",
                f"--runs={sizes.watched_runs}", f"--reps={sizes.watched_reps}",
                "--start-concurrency=0",
                f"--loop={kind.split('-')[1] if '-' in kind else 'asyncio'}",
            ]
            for kind in ("file-asyncio", "file-trio", "memory")
        },
        # The same on S3 and DynamoDB (moto), the runs kept in 256 packs (PackedBackend).
        **{
            f"watched-{kind}": [
                "s3_fanout.py", f"--backend={kind}", f"--runs={sizes.watched_runs}",
                f"--reps={sizes.watched_reps}", "--start-concurrency=0", "--packs=256",
            ]
            for kind in ("s3", "dynamodb")
        },
        "shards-file": [
            "shards.py", "--backend=file", f"--runs={sizes.shard_runs}",
            "--n", *map(str, sizes.shard_ns),
        ],
        **{
            f"shards-{kind}": [
                "shards.py", f"--backend={kind}", f"--runs={sizes.shard_aws_runs}",
                f"--packs={SHARD_PACKS}", "--n", *map(str, sizes.shard_aws_ns),
            ]
            for kind in ("s3", "dynamodb")
        },
        "coldpath": ["coldpath.py", f"--reps={sizes.cold_reps}"],
        "dashboard": [
            "dashboard.py", f"--runs={sizes.fanout_runs}", f"--reps={sizes.fanout_reps}",
        ],
    }  # fmt: skip
    unknown = skip - plan.keys()
    if unknown:
        raise SystemExit(f"unknown scenario(s) to skip: {sorted(unknown)}; known: {list(plan)}")
    if only:
        skip = skip | {name for name in plan if not name.startswith(tuple(only))}
    if importlib.util.find_spec("ttflow") is None:
        # ttflow needs Python 3.11+; the dev group installs it only there.
        log("ttflow is not installed (it needs Python 3.11+): its comparisons are skipped")
        skip = skip | {"vs-ttflow", "replay-ttflow", "steps-ttflow"}
    if importlib.util.find_spec("dbos") is None:
        # `nox -s bench` installs it; a plain dev venv may not have it.
        log("dbos is not installed (`pip install dbos`): its comparisons are skipped")
        skip = skip | {name for name in plan if "dbos" in name}
    return {
        name: run_scenario(name, argv, timeout) for name, argv in plan.items() if name not in skip
    }


# ---- formatting -----------------------------------------------------------------------------


def secs(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def ms(s: float) -> str:
    return f"{s * 1000:.2f} ms"


def micros(s: float) -> str:
    return f"{s * 1e6:.0f} µs"


def mib(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f} MiB"


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def reps_note(r: dict[str, Any]) -> str:
    times = r["times_s"]
    if len(times) == 1:
        return "1 rep"
    return f"median of {len(times)}: " + " / ".join(secs(t) for t in times)


class Row(NamedTuple):
    benchmark: str
    size: str
    result: str
    rss: str = "—"
    target: str = "—"
    met: str = "—"
    notes: str = ""


def table(out: dict[str, Outcome], sizes: Sizes, quick: bool) -> str:
    """The figures as one Markdown table; timing targets apply to the full sizes only."""
    rows: list[Row] = []

    def figures(name: str, label: str, size: str) -> dict[str, Any] | None:
        """The scenario's result if it ran cleanly; else a "failed" row and None."""
        o = out.get(name)
        if o is None:  # skipped
            return None
        if o.result is None or o.problems:
            rows.append(Row(label, size, "failed", notes=o.error or "; ".join(o.problems)))
            return None
        return o.result

    def goal(full_target: str, ok: bool) -> dict[str, str]:
        return {} if quick else {"target": full_target, "met": met(ok)}

    for loop in ("asyncio", "trio"):
        size = f"{sizes.fanout_runs:,} paused runs × 50 ms I/O"
        label = f"Fan-out: one `flow.run()`, file backend, {loop}"
        if r := figures(f"fanout-{loop}", label, size):
            setup = (
                f"setup: {r['runs']:,} × start() {secs(r['setup_start_s'])}, "
                f"first run() {secs(r['setup_first_run_s'])}"
            )
            rows.append(
                Row(label, size, secs(r["median_s"]), mib(r["peak_rss_mib"]),
                    **goal("≤ 5 s", r["median_s"] <= 5.0), notes=f"{reps_note(r)}; {setup}")
            )  # fmt: skip

    size = f"{sizes.vs_runs:,} paused runs × 50 ms I/O"
    vs = {
        "vs-asyncflow": "Fan-out vs ttflow: asyncflow (file backend, asyncio)",
        "vs-ttflow": "Fan-out vs ttflow: ttflow 0.6.3 (`local:` file)",
    }
    got: list[dict[str, Any] | None] = []
    for name, label in vs.items():
        got.append(r := figures(name, label, size))
        if r:
            rows.append(
                Row(label, size, secs(r["median_s"]), mib(r["peak_rss_mib"]), notes=reps_note(r))
            )
    a, t = got
    if a and t:
        ratio = t["median_s"] / a["median_s"]
        rows.append(Row("Fan-out vs ttflow: ttflow / asyncflow", size, f"{ratio:.0f}×"))

    label = "Replay: one `flow.run()`, memory backend"
    n1, n2 = sizes.replay_steps, 2 * sizes.replay_steps
    got = []
    for name, n in (("replay-1x", n1), ("replay-2x", n2)):
        got.append(r := figures(name, label, f"{n:,} recorded side effects"))
        if r:
            # The larger size's target is its ratio to the smaller one (next row).
            target = goal("≤ 0.3 s", r["median_s"] <= 0.3) if n == n1 else {}
            rows.append(
                Row(label, f"{n:,} recorded side effects", secs(r["median_s"]),
                    mib(r["peak_rss_mib"]), **target,
                    notes=f"{reps_note(r)}; first execution (recording) {secs(r['build_s'])}")
            )  # fmt: skip
    one, two = got
    if one and two:
        ratio = two["median_s"] / one["median_s"]
        rows.append(
            Row(f"Replay: {n2:,} steps / {n1:,} steps", "—", f"{ratio:.2f}×", target="≤ 2.5×",
                met=met(ratio <= 2.5), notes="≈ 2 is linear, ≈ 4 quadratic")
        )  # fmt: skip

    size = f"{sizes.tt_replay_steps:,} recorded side effects"
    if r := figures("replay-ttflow", "Replay: ttflow 0.6.3, `onmemory`", size):
        rows.append(
            Row("Replay: ttflow 0.6.3, `onmemory`", size, secs(r["median_s"]),
                mib(r["peak_rss_mib"]),
                notes=f"{reps_note(r)}; first execution {secs(r['build_s'])}")
        )  # fmt: skip

    label = "Branches: `c.map()` in one run, memory backend"
    size = f"{sizes.branch_items:,} branches × 50 ms I/O"
    if r := figures("branches", label, size):
        rows.append(
            Row(label, size, f"first {secs(r['first_s'])}, replay {secs(r['median_s'])}",
                mib(r["peak_rss_mib"]),
                notes=f"one after the other: {secs(r['sequential_s'])}; replay {reps_note(r)}")
        )  # fmt: skip

    label = "Timers: one `flow.run()`, file backend, asyncio"
    size = f"{sizes.fanout_runs:,} runs in `c.sleep`, none due"
    if r := figures("timers", label, size):
        rows.append(
            Row(label, size, secs(r["skip_s"]), mib(r["peak_rss_mib"]),
                notes=f"median of {r['reps']}; the same runs paused by `pause_once`:"
                      f" {secs(r['paused_s'])} (each claimed, read, replayed, stored)")
        )  # fmt: skip
        size = f"{r['waiters']:,} runs in `c.wait_event`"
        rows.append(
            Row("Events: one `flow.emit()` waking every waiting run, file backend, asyncio", size,
                secs(r["emit_s"]), notes="each woken run resumes and finishes in it")
        )  # fmt: skip

    label = "`import asyncflow` (fresh interpreter)"
    if r := figures("import", label, "—"):
        forbidden = r["forbidden_loaded"]
        others = [m for m in r["heavy_loaded"] if m not in forbidden]
        notes = [
            f"median of {r['reps']}",
            f"**imports {', '.join(forbidden)}**"
            if forbidden
            else "aiobotocore, botocore, httpx not imported",
            *([f"also loaded: {', '.join(others)}"] if others else []),
            f"{r['new_modules']} modules",
            "slowest inside: " + ", ".join(f"{m} {secs(s)}" for m, s in r["slowest"][1:4]),
        ]
        # The no-heavy-imports part holds at any size, so quick mode checks it too.
        if quick:
            target = {"target": "no AWS/httpx", "met": met(not forbidden)}
        else:
            ok = r["median_s"] <= 0.05 and not forbidden
            target = {"target": "≤ 50 ms, no AWS/httpx", "met": met(ok)}
        rows.append(Row(label, "—", secs(r["median_s"]), **target, notes="; ".join(notes)))

    if r := figures("lambda", "Lambda handler", "—"):
        loaded = ", ".join(r["import_heavy"]) or "no AWS/HTTP library"
        rows.append(
            Row("Lambda: `import asyncflow.aws_lambda` (cold start)", "—",
                secs(r["import_median_s"]),
                notes=f"median of {len(r['import_times_s'])} fresh interpreters; loads {loaded}")
        )  # fmt: skip
        size = f"{r['calls']:,} invocations × {r['reps']} reps, `memory:`"
        rows.append(
            Row("Lambda: warm invocation overhead, direct `{\"trigger\": ...}`", size,
                micros(r["overhead_s"]),
                notes=f"handler {micros(r['handler_s'])} vs `await flow.run()` "
                f"{micros(r['direct_s'])} per one-step invocation (medians)")
        )  # fmt: skip
        rows.append(
            Row("Lambda: warm invocation overhead, function URL request", size,
                micros(r["url_overhead_s"]),
                notes=f"handler {micros(r['url_s'])}; first call of a container (loop thread, "
                f"backend opened) {secs(r['first_call_s'])}")
        )  # fmt: skip
    aws_size = f"{sizes.aws_runs:,} paused runs × 50 ms I/O"
    packed_size = f"{sizes.watched_runs:,} paused runs × 50 ms I/O"
    stores = {
        "aws-fanout-file": ("file backend", aws_size),
        "aws-fanout-s3": ("S3 (moto), one object per run", aws_size),
        "aws-fanout-dynamodb": ("DynamoDB (moto), one item per run", aws_size),
        "watched-s3": ("S3 (moto), runs in 256 packs", packed_size),
        "watched-dynamodb": ("DynamoDB (moto), runs in 256 packs", packed_size),
    }
    for name, (where, size) in stores.items():
        label = f"AWS fan-out: one `flow.run()`, {where}, asyncio"
        if r := figures(name, label, size):
            per_run = ", ".join(f"{op} {n:g}" for op, n in r["requests_per_run"].items())
            notes = (
                f"{reps_note(r)}; client CPU {secs(r['cpu_s'])} ({ms(r['cpu_per_run_s'])} per "
                f"run); setup: {starts(r)} "
                f"{secs(r['start_s'])}, first run() {secs(r['setup_first_run_s'])}"
            )
            notes += f"; requests per run: {per_run}" if per_run else ""
            rows.append(Row(label, size, secs(r["median_s"]), mib(r["peak_rss_mib"]), notes=notes))

    label = 'Cold path: `setup("s3://…")` + first request (fresh process, moto)'
    if r := figures("coldpath", label, "—"):
        notes = (
            f"median of {r['reps']}: import asyncflow {secs(r['asyncflow_import_s'])}, setup"
            f" {secs(r['asyncflow_setup_s'])} (imports aiobotocore), first request"
            f" {secs(r['asyncflow_first_request_s'])} (client + request); aiobotocore import"
            f" alone {secs(r['aiobotocore_import_s'])}; plain aiobotocore import + client +"
            f" one request {secs(r['plain_aiobotocore_s'])}"
        )
        rows.append(Row(label, "—", secs(r["asyncflow_total_s"]), notes=notes))

    label = "Dashboard: the runs page's request, file backend, asyncio"
    size = f"{sizes.fanout_runs:,} runs stored"
    if r := figures("dashboard", label, size):
        worst = max(r["cold_s"], r["warm_s"], r["filtered_s"])
        notes = (
            f"first request of a fresh app {secs(r['cold_s'])} (reads the page, then records"
            f" for up to 0.3 s); later ones {secs(r['warm_s'])}; filtered by status, workflow,"
            f" wait and id, last page {secs(r['filtered_s'])} (as a fresh app's first request,"
            f" reading every record: {secs(r['cold_filtered_s'])}); the HTML page"
            f" {secs(r['page_s'])}"
        )
        rows.append(
            Row(label, size, secs(worst), mib(r["peak_rss_mib"]), **goal("≤ 1 s", worst <= 1.0),
                notes=notes)
        )  # fmt: skip

    rows += peer_rows(out, sizes, figures)
    rows += shard_rows(sizes, figures)

    head = ("Benchmark", "Size", "Result", "Peak RSS", "Target", "Met", "Notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


Figures = Any  # table()'s figures(name, label, size) -> result or None (adds a failed row)


def peer_rows(out: dict[str, Outcome], sizes: Sizes, figures: Figures) -> list[Row]:
    """Issue 14's scenarios: durable steps and fan-out next to DBOS and ttflow, watched runs."""
    rows: list[Row] = []
    for n in sizes.steps:
        label = "Durable steps: one run records N side effects, asyncflow file backend"
        if r := figures(f"steps-{n}", label, f"{n:,} steps"):
            rows.append(
                Row(label, f"{n:,} steps", secs(r["median_s"]), mib(r["peak_rss_mib"]),
                    notes=f"{ms(r['per_item_s'])} per step; {reps_note(r)}")
            )  # fmt: skip
    for n in sizes.dbos_steps:
        label = "Durable steps: DBOS on SQLite (async workflow, async steps)"
        if r := figures(f"steps-dbos-{n}", label, f"{n:,} steps"):
            rows.append(
                Row(label, f"{n:,} steps", secs(r["median_s"]), mib(r["peak_rss_mib"]),
                    notes=f"{ms(r['per_item_s'])} per step; {reps_note(r)}; "
                    f"dbos {r['dbos_version']}")
            )  # fmt: skip
    label = "Durable steps: ttflow 0.6.3 (`local:` file)"
    if r := figures("steps-ttflow", label, f"{sizes.tt_steps:,} steps"):
        rows.append(
            Row(label, f"{sizes.tt_steps:,} steps", secs(r["median_s"]), mib(r["peak_rss_mib"]),
                notes=f"{ms(r['per_item_s'])} per step; {reps_note(r)}; only this size: "
                "ttflow's recording is quadratic")
        )  # fmt: skip

    for n in fanout_sizes(sizes):
        size = f"{n:,} workflows × one 50 ms step"
        a = out.get(fanout_name(n, sizes))
        d = out.get(f"vs-dbos-{n}")
        if d is None:
            if n > sizes.dbos_fanout_max:
                rows.append(
                    Row("Fan-out: DBOS on SQLite", size, "not run",
                        notes=f"capped at {sizes.dbos_fanout_max:,} workflows to keep the "
                        "session near 30 min (DBOS took ~506 s and 10,000 threads here at "
                        "10,000); `--dbos-fanout-max` raises the cap")
                )  # fmt: skip
            continue
        if r := figures(f"vs-dbos-{n}", "Fan-out: DBOS on SQLite", size):
            note = f"{reps_note(r)}; {r['threads']} threads at the peak"
            if a and a.ok and a.result:
                ratio = r["median_s"] / a.result["median_s"]
                note += f"; DBOS / asyncflow (file, asyncio) {ratio:.1f}×"
            rows.append(
                Row("Fan-out: DBOS on SQLite (started and awaited)", size, secs(r["median_s"]),
                    mib(r["peak_rss_mib"]), notes=note)
            )  # fmt: skip
    for n in sizes.vs_fanout:
        if n in (sizes.vs_runs, sizes.fanout_runs):
            continue  # their rows are above
        label = "Fan-out: asyncflow, file backend, asyncio"
        if r := figures(f"vs-asyncflow-{n}", label, f"{n:,} paused runs × 50 ms I/O"):
            rows.append(
                Row(label, f"{n:,} paused runs × 50 ms I/O", secs(r["median_s"]),
                    mib(r["peak_rss_mib"]), notes=reps_note(r))
            )  # fmt: skip

    for name, where in (
        ("watched-file-asyncio", "file backend, asyncio"),
        ("watched-file-trio", "file backend, trio"),
        ("watched-memory", "memory backend, asyncio"),
    ):
        size = f"{sizes.watched_runs:,} paused runs × 50 ms I/O"
        label = f"Watched runs: one `flow.run()`, {where}"
        if r := figures(name, label, size):
            rows.append(
                Row(label, size, secs(r["median_s"]), mib(r["peak_rss_mib"]),
                    notes=f"{reps_note(r)}; CPU {secs(r['cpu_s'])}; setup: "
                    f"{starts(r)} {secs(r['start_s'])}, first "
                    f"run() {secs(r['setup_first_run_s'])}")
            )  # fmt: skip
    return rows


SHARD_PACKS = 256  # S3 and DynamoDB keep the shards' runs in packs (goal 1's layout)
SHARD_STORES = {
    "file": "file backend",
    "s3": f"S3 (moto), {SHARD_PACKS} packs",
    "dynamodb": f"DynamoDB (moto), {SHARD_PACKS} packs",
}


def shard_rows(sizes: Sizes, figures: Figures) -> list[Row]:
    """Goal 3: one row per round of shards.py (n processes, one shard each)."""
    rows: list[Row] = []
    for kind, where in SHARD_STORES.items():
        runs = sizes.shard_runs if kind == "file" else sizes.shard_aws_runs
        label = f"Shards: n processes, one `flow.run(shard=(k, n))` each, {where}"
        if not (r := figures(f"shards-{kind}", label, f"{runs:,} paused runs × 50 ms I/O")):
            continue
        one = r["rounds"][0]["runs_per_s"] if r["rounds"][0]["n"] == 1 else None
        for rnd in r["rounds"]:
            n = rnd["n"]
            shares = "/".join(f"{p['runs']:,}" for p in rnd["per_process"])
            notes = [
                f"{rnd['runs_per_s']:,.0f} runs/s"
                + (f" ({rnd['runs_per_s'] / one:.2f}× n = 1)" if one and n != 1 else ""),
                f"CPU of the {n} process{'es' if n > 1 else ''} {secs(rnd['cpu_s'])}",
                f"runs per process {shares}",
                f"{rnd['held']} claims held elsewhere, {rnd['conflicts']} runs lost to a write",
            ]
            if rnd.get("machine_busy") is not None:
                notes.append(f"the machine's cores {rnd['machine_busy']:.0%} busy")
            if kind != "file":
                notes.append(f"{rnd['requests_per_run']:.2f} requests/run")
            if n == r["ns"][0]:
                notes.append(
                    f"setup: {r['runs']:,} runs in one start_many() {secs(r['start_s'])},"
                    f" first run() {secs(r['setup_first_run_s'])}; {r['cores']} cores"
                )
            rows.append(
                Row(label, f"{r['runs']:,} paused runs × 50 ms I/O, n = {n}",
                    secs(rnd["seconds"]), mib(rnd["peak_rss_mib"]), notes="; ".join(notes))
            )  # fmt: skip
    return rows


def shards_goal(out: dict[str, Outcome], quick: bool) -> tuple[str, str, str, str]:
    """Goal 3's row. Met when every round on every store was clean (each run advanced and
    executed once, by its own shard, no claim contended: shards.py's checks) and, on S3 and
    DynamoDB (the stores the goal names), throughput grew with n "until the machine's cores
    are the limit": n = 2 at least 1.1× n = 1, unless the cores were already >= 90 % busy at
    n = 1 (moto's server shares them). The file backend's figures are shown, not judged: its
    processes share one disk, and every durable write flushes it whole (see shards.py)."""
    goal = "3. n invocations share the due runs (`flow.run(shard=...)`), n processes"
    target = (
        "every run advanced once, no contended claim; on S3/DynamoDB throughput grows with n "
        "until the cores (2) are the limit"
    )
    measured: list[str] = []
    clean, judged, grows = True, False, True
    for kind, where in SHARD_STORES.items():
        o = out.get(f"shards-{kind}")
        if o is None:  # skipped: says nothing
            continue
        if o.result is None:
            clean = False
            measured.append(f"{where}: **failed** ({o.error})")
            continue
        clean = clean and not o.problems
        r = o.result
        rounds = {rnd["n"]: rnd for rnd in r["rounds"]}
        text = f"{where}, {r['runs']:,} runs: " + ", ".join(
            f"n = {n} {rnd['runs_per_s']:,.0f} runs/s" for n, rnd in rounds.items()
        )
        if 1 in rounds and 2 in rounds:
            ratio = rounds[2]["runs_per_s"] / rounds[1]["runs_per_s"]
            busy = rounds[1].get("machine_busy")
            text += f" (n = 2: {ratio:.2f}×" + (
                f"; cores {busy:.0%} busy at n = 1)" if busy is not None else ")"
            )
            if kind != "file":
                judged = True
                grows = grows and (ratio >= 1.1 or (busy is not None and busy >= 0.9))
        if o.problems:
            text += " (**" + "; ".join(o.problems[:2]) + "**)"
        measured.append(text)
    if not measured:
        return (goal, "not measured (failed or skipped)", target, "—")
    if clean:
        measured.append("every run advanced once, 0 claims held elsewhere or lost")
    if quick:
        met = "— (quick run)"
    elif not clean or not grows:
        met = "**no**"
    else:
        met = "yes" if judged else "— (S3/DynamoDB not measured)"
    return (goal, "; ".join(measured), target, met)


def starts(r: dict[str, Any]) -> str:
    """How s3_fanout.py started its runs: one ``start_many``, or ``start()`` from n tasks."""
    if not r["start_concurrency"]:
        return f"{r['runs']:,} runs in one start_many()"
    return f"{r['runs']:,} start() from {r['start_concurrency']:,} tasks"


def ok_result(out: dict[str, Outcome], name: str) -> dict[str, Any] | None:
    o = out.get(name)
    return o.result if o is not None and o.ok else None


# Issue 14's baseline on S3: 3 requests and 9.9 ms of client CPU per advanced run; the goal is
# 0.05 requests per run, and the CPU per run cut by the same factor (60).
CPU_PER_RUN_GOAL_S = 9.9e-3 * 0.05 / 3


def goals_table(out: dict[str, Outcome], sizes: Sizes, quick: bool) -> str:
    """One row per goal of issue 14: what was measured, its target, and whether it is met.

    A goal is only "met" from figures at the size it names; a smaller run says "not measured
    at <size>" (or "no" when a per-run figure already misses the target at any size).
    """
    rows: list[tuple[str, str, str, str]] = []
    at_size = f"not measured at {WATCHED_GOAL:,}"

    def verdict(ok: bool, full_size: bool) -> str:
        if quick:
            return "— (quick run)"
        if not ok:
            return "**no**"
        return "yes" if full_size else at_size

    for loop in ("asyncio", "trio"):
        r = ok_result(out, f"watched-file-{loop}")
        goal = f"1. {WATCHED_GOAL:,} watched runs in one `flow.run()`, file, {loop}"
        target = "≤ 60 s, ≤ 1 GiB peak RSS"
        if r is None:
            rows.append((goal, "not measured (failed or skipped)", target, "—"))
            continue
        ok = r["median_s"] <= 60 and r["peak_rss_mib"] <= 1024
        rows.append(
            (goal, f"{r['runs']:,} runs: {secs(r['median_s'])}, {mib(r['peak_rss_mib'])}",
             target, verdict(ok, r["runs"] >= WATCHED_GOAL))
        )  # fmt: skip
    memory = ok_result(out, "watched-memory")
    for kind, where in (("s3", "S3"), ("dynamodb", "DynamoDB")):
        r = ok_result(out, f"watched-{kind}")
        goal = f"1. {WATCHED_GOAL:,} watched runs in one `flow.run()`, {where} (moto), 256 packs"
        target = f"≤ 120 s; ≤ 0.05 requests/run; storage client CPU ≤ {ms(CPU_PER_RUN_GOAL_S)}/run"
        if r is None:
            rows.append((goal, "not measured (failed or skipped)", target, "—"))
            continue
        per_run = r["requests_per_run_total"]
        estimate = r["median_s"] * WATCHED_GOAL / r["runs"]
        # The client CPU that storage costs: this store's CPU per run less the memory
        # store's, at the same size (the engine's own share is the same on every store).
        storage = r["cpu_per_run_s"] - (memory["cpu_per_run_s"] if memory else 0.0)
        result = (
            f"{r['runs']:,} runs: {secs(r['median_s'])}"
            + ("" if r["runs"] >= WATCHED_GOAL else f" (≈ {secs(estimate)} at {WATCHED_GOAL:,})")
            + f"; {per_run:.3f} requests/run; CPU {ms(r['cpu_per_run_s'])}/run, of which"
            f" storage {ms(storage)} (memory store: {ms(r['cpu_per_run_s'] - storage)})"
        )
        ok = per_run <= 0.05 and storage <= CPU_PER_RUN_GOAL_S
        ok = ok and (r["median_s"] if r["runs"] >= WATCHED_GOAL else estimate) <= 120
        rows.append((goal, result, target, verdict(ok, r["runs"] >= WATCHED_GOAL)))
    for name, where in (
        ("watched-file-asyncio", "file"),
        ("watched-memory", "memory"),
        ("watched-s3", "S3 (moto), 256 packs"),
        ("watched-dynamodb", "DynamoDB (moto), 256 packs"),
    ):
        r = ok_result(out, name)
        goal = f"2. {WATCHED_GOAL:,} starts (`start_many`), {where}"
        if r is None:
            rows.append((goal, "not measured (failed or skipped)", "≤ 30 s", "—"))
            continue
        estimate = r["start_s"] * WATCHED_GOAL / r["runs"]
        result = f"{starts(r)}: {secs(r['start_s'])}"
        if r["runs"] < WATCHED_GOAL:
            result += f" (× {WATCHED_GOAL // r['runs']:,} ≈ {secs(estimate)})"
        rows.append((goal, result, "≤ 30 s", verdict(estimate <= 30, r["runs"] >= WATCHED_GOAL)))
    rows.append(shards_goal(out, quick))
    small, large = sizes.steps[-2], sizes.steps[-1]
    a, b = ok_result(out, f"steps-{small}"), ok_result(out, f"steps-{large}")
    if a and b:
        ratio = b["median_s"] / a["median_s"]
        rows.append(
            (f"4. recording {large:,} side effects / {small:,}, file",
             f"{secs(b['median_s'])} / {secs(a['median_s'])} = {ratio:.2f}×", "≤ 2.2×",
             verdict(ratio <= 2.2, True))
        )  # fmt: skip
    else:
        rows.append(
            (f"4. recording {large:,} / {small:,} side effects", "not measured", "≤ 2.2×", "—")
        )
    common = [n for n in sizes.dbos_steps if n in sizes.steps]
    n = common[-1] if common else None
    a = ok_result(out, f"steps-{n}") if n else None
    d = ok_result(out, f"steps-dbos-{n}") if n else None
    if n and a and d:
        rows.append(
            (f"4. per-step durable cost at {n:,} steps: asyncflow file vs DBOS SQLite",
             f"{ms(a['per_item_s'])} vs {ms(d['per_item_s'])} "
             f"({a['per_item_s'] / d['per_item_s']:.2f}×)", "asyncflow ≤ DBOS",
             verdict(a["per_item_s"] <= d["per_item_s"], True))
        )  # fmt: skip
    else:
        rows.append(("4. per-step durable cost vs DBOS on SQLite", "not measured", "≤ DBOS", "—"))
    keep = [
        (f"5. replay of {sizes.replay_steps:,} steps", "replay-1x", "≤ 0.3 s", 0.3),
        ("5. `import asyncflow`", "import", "≤ 50 ms", 0.05),
        (f"5. {sizes.fanout_runs:,}-run fan-out, file, asyncio", "fanout-asyncio", "≤ 5 s", 5.0),
        (f"5. {sizes.fanout_runs:,}-run fan-out, file, trio", "fanout-trio", "≤ 5 s", 5.0),
    ]
    for goal, name, target, limit in keep:
        r = ok_result(out, name)
        if r is None:
            rows.append((goal, "not measured (failed or skipped)", target, "—"))
        else:
            rows.append((goal, secs(r["median_s"]), target, verdict(r["median_s"] <= limit, True)))
    ratios = []
    for n in fanout_sizes(sizes):
        a = ok_result(out, fanout_name(n, sizes))
        for peer, name in (("DBOS", f"vs-dbos-{n}"), ("ttflow", "vs-ttflow")):
            p = ok_result(out, name)
            if a and p and (peer == "DBOS" or n == sizes.vs_runs):
                ratios.append(f"{peer}/asyncflow {p['median_s'] / a['median_s']:.0f}× at {n:,}")
    peers_ran = any("dbos" in k for k in out) and any("ttflow" in k for k in out)
    rows.append(
        ("6. asyncflow, DBOS and ttflow side by side in one run (fan-out)",
         "; ".join(ratios) or "no peer ran", "all three in one `nox -s bench`",
         "yes" if peers_ran and ratios else "**no**")
    )  # fmt: skip
    head = ("Issue 14 goal", "Measured", "Target", "Met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_info(load_before: float) -> str:
    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {now} on {platform.system()} {platform.release()}, {cpu}, "
        f"nproc {usable if usable is not None else os.cpu_count()}, "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"asyncflow {ver('asyncflow-durable')} ({commit or 'no commit yet'}), "
        f"anyio {ver('anyio')}, trio {ver('trio')}, ttflow {ver('ttflow')}, dbos {ver('dbos')}. "
        # Other work on the machine (a test suite, a build) inflates every figure: say so.
        f"Load average (1 min) {load_before:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after."
    )


def report(out: dict[str, Outcome], sizes: Sizes, quick: bool, load_before: float) -> str:
    kind = "quick run (`--quick`, scaled down; time targets not applied)" if quick else "full run"
    return "\n".join(
        [
            f"Benchmarks, {kind}: `python benchmarks/run.py{' --quick' if quick else ''}` "
            "(`nox -s bench`).",
            "",
            goals_table(out, sizes, quick),
            "",
            table(out, sizes, quick),
            "",
            "Result: median wall time of the measured invocation, each scenario in its own "
            "process; Peak RSS: `ru_maxrss` of that process (interpreter, setup and measured "
            "part together). asyncflow's modules are compiled to bytecode before the run, as "
            "`pip install` compiles an installed package's: a cold start pays for importing "
            "them, not for compiling them.",
            "",
            machine_info(load_before),
        ]
    )


def write_readme(text: str, readme: Path = README) -> None:
    """Replace what is between the markers; leave the file alone if they are missing."""
    content = readme.read_text(encoding="utf-8") if readme.exists() else ""
    start, end = content.find(START), content.find(END)
    if start == -1 or end == -1 or end < start:
        log(f"warning: {readme} has no {START} ... {END} section; README left unchanged")
        return
    new = content[: start + len(START)] + "\n" + text + "\n" + content[end:]
    readme.write_text(new, encoding="utf-8")
    log(f"wrote the benchmarks section of {readme}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="scaled-down sizes, for a smoke test")
    p.add_argument(
        "--write-readme", action="store_true", help="replace the README's benchmarks section"
    )
    p.add_argument("--readme", type=Path, default=README, help="the file --write-readme updates")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="leave a scenario out (repeatable), e.g. --skip fanout-trio",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PREFIX",
        help="run only the scenarios whose name starts with PREFIX (repeatable), e.g. steps-",
    )
    # The 100,000-run scenarios take about 4 minutes each on a quiet machine (starts, a first
    # run, the measured one, removing the folder), 14 on one shared by other work.
    p.add_argument("--timeout", type=float, default=1800, help="seconds per scenario process")
    p.add_argument("--aws-runs", type=int, help="runs of the S3/DynamoDB scenarios (e.g. 100000)")
    p.add_argument("--watched-runs", type=int, help="runs of the file/memory watched scenarios")
    p.add_argument("--dbos-fanout-max", type=int, help="largest DBOS fan-out (e.g. 10000)")
    a = p.parse_args()

    sizes = QUICK if a.quick else FULL
    changes = {
        "aws_runs": a.aws_runs,
        "watched_runs": a.watched_runs,
        "dbos_fanout_max": a.dbos_fanout_max,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v is not None})
    # Compiled first, as `pip install` (and so a Lambda package) compiles an installed
    # package's modules: an editable checkout under PYTHONDONTWRITEBYTECODE would otherwise
    # compile every module in every scenario's fresh interpreter, and the import figures
    # would measure the compiler (127 ms against 80 ms here).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "asyncflow")], check=True)
    load_before = os.getloadavg()[0]
    out = run_all(sizes, a.timeout, set(a.skip), a.only)
    text = report(out, sizes, a.quick, load_before)
    print(text)

    failures = [o for o in out.values() if not o.ok]
    if a.write_readme:
        if a.only:
            log("warning: not every scenario ran (--only); README left unchanged")
        elif failures:
            log("warning: some scenarios failed; README left unchanged")
        else:
            write_readme(text, a.readme)
    if failures:
        for o in failures:
            log(f"FAILED {o.name}: {o.error or '; '.join(o.problems)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
