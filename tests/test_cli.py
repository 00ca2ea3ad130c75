"""The command line of a flow script (`flow.cli()`): tests/helpers/proc_cli_flow.py, each
invocation loaded afresh and run in-process (`main(flow, argv)`, tests/helpers/script_cli.py),
a few as real processes (the exit status and the bytes a process writes); pipes, signals and
terminals are in tests/test_cli_processes.py. Every test gets its own backend folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from script_cli import ScriptCli

SCRIPT = Path(__file__).resolve().parent / "helpers" / "proc_cli_flow.py"
RESULT_KEYS = {
    "workflow", "run_id", "status", "logs", "result", "error", "traceback", "wake_at",
    "wait_event",
}  # fmt: skip


class Cli(ScriptCli):
    def json(self, *argv: str, code: int = 0) -> object:
        proc = self(*argv, "--json")
        assert proc.returncode == code, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(SCRIPT, tmp_path, monkeypatch, capsys)


def assert_usage_error(proc: subprocess.CompletedProcess[str], *mentions: str) -> str:
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for mention in mentions:
        assert mention in lines[0]
    return lines[0]


def test_run_prints_the_run_summary(cli: Cli) -> None:
    proc = cli("run", "greet", '{"name": "Ada"}')
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"^\t  run_id: (\S+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    assert proc.stdout == (
        "\n---------RUN SUMMARY---------\n1 workflow run\n"
        "\t1.\n"
        "\t  workflow: greet\n"
        f"\t  run_id: {match[1]}\n"
        "\t  status: succeeded\n"
        '\t  result: {"name": "Ada", "total": 3}\n'
        "\t  logs:\n"
        "\t    - hello, Ada\n"
        "total: 1 succeeded\n"
        f"store: {cli.backend}\n"
    )


def test_run_json(cli: Cli) -> None:
    [result] = cli.json("run", "greet", '{"name": "Ada"}')
    assert set(result) == RESULT_KEYS
    assert result["workflow"] == "greet"
    assert result["status"] == "succeeded"
    assert result["logs"] == ["hello, Ada"]
    assert result["result"] == {"name": "Ada", "total": 3}
    assert result["error"] is None
    assert isinstance(result["run_id"], str)
    assert result["run_id"]


def test_run_without_trigger_resumes_paused_runs(cli: Cli) -> None:
    [first] = cli.json("run", "wait")
    assert (first["status"], first["logs"]) == ("paused", ["waiting"])
    [second] = cli.json("run")
    assert second["run_id"] == first["run_id"]
    assert (second["status"], second["logs"]) == ("succeeded", ["waiting", "done waiting"])
    assert cli.json("run") == []


def test_run_summary_counts_runs(cli: Cli) -> None:
    cli.json("run", "wait")
    proc = cli("run", "wait")  # starts a second run and resumes the first one
    assert proc.returncode == 0, proc.stderr
    assert "\n2 workflow runs\n" in proc.stdout
    assert "\n\t1.\n" in proc.stdout
    assert "\n\t2.\n" in proc.stdout
    assert proc.stdout.count("\t  status: succeeded\n") == 1
    assert proc.stdout.count("\t  status: paused\n") == 1

    cli.json("run")
    proc = cli("run")
    assert proc.returncode == 0, proc.stderr
    assert "\n0 workflow runs\n" in proc.stdout
    assert "run_id" not in proc.stdout


def test_failing_workflow_exits_1(cli: Cli) -> None:
    [failed] = cli.json("run", "boom", code=1)
    assert failed["status"] == "failed"
    assert failed["error"] == "ValueError: kaboom"
    assert failed["logs"] == ["about to fail"]
    assert failed["result"] is None

    proc = cli("run", "boom")
    assert proc.returncode == 1
    assert "\t  status: failed\n" in proc.stdout
    assert "\n\t  error: ValueError: kaboom\n" in proc.stdout

    # The failed runs are finished: nothing left to run, so the next invocation is fine.
    assert cli.json("run") == []


def test_one_failed_run_among_others_exits_1(cli: Cli) -> None:
    cli.json("run", "wait")
    results = cli.json("run", "boom", code=1)
    assert sorted(r["status"] for r in results) == ["failed", "succeeded"]


def test_runs_lists_oldest_first_and_filters_by_status(cli: Cli) -> None:
    [ok] = cli.json("run", "greet")
    [failed] = cli.json("run", "boom", code=1)
    [paused] = cli.json("run", "wait")

    runs = cli.json("runs")
    assert [(r["run_id"], r["workflow"], r["status"]) for r in runs] == [
        (ok["run_id"], "greet", "succeeded"),
        (failed["run_id"], "boom", "failed"),
        (paused["run_id"], "wait", "paused"),
    ]
    for status, expected in [("succeeded", ok), ("failed", failed), ("paused", paused)]:
        [only] = cli.json("runs", "--status", status)
        assert (only["run_id"], only["status"]) == (expected["run_id"], status)
    assert cli.json("runs", "--status", "pending") == []

    proc = cli("runs")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for run in (ok, failed, paused):
        [line] = [line for line in lines if run["run_id"] in line]
        assert run["workflow"] in line or run["status"] in line
    positions = [proc.stdout.index(r["run_id"]) for r in (ok, failed, paused)]
    assert positions == sorted(positions)

    proc = cli("runs", "--status", "paused")
    assert proc.returncode == 0, proc.stderr
    assert paused["run_id"] in proc.stdout
    assert ok["run_id"] not in proc.stdout
    assert failed["run_id"] not in proc.stdout


def test_show_gives_steps_and_logs(cli: Cli) -> None:
    [ok] = cli.json("run", "greet", '{"name": "Ada"}')
    run = cli.json("show", ok["run_id"])
    assert run["run_id"] == ok["run_id"]
    assert run["workflow"] == "greet"
    assert run["trigger"] == "greet"
    assert run["args"] == {"name": "Ada"}
    assert run["status"] == "succeeded"
    assert run["logs"] == ["hello, Ada"]
    assert run["result"] == {"name": "Ada", "total": 3}
    assert run["created_at"] <= run["updated_at"]
    assert [s["kind"] for s in run["steps"]] == ["sideeffect", "log"]
    assert (run["steps"][0]["name"], run["steps"][0]["value"]) == ("add", 3)

    proc = cli("show", ok["run_id"])
    assert proc.returncode == 0, proc.stderr
    for text in (ok["run_id"], "greet", "succeeded", "sideeffect", "add", "hello, Ada"):
        assert text in proc.stdout


def test_show_failed_run_gives_its_error(cli: Cli) -> None:
    [failed] = cli.json("run", "boom", code=1)
    run = cli.json("show", failed["run_id"])
    assert (run["status"], run["error"]) == ("failed", "ValueError: kaboom")
    proc = cli("show", failed["run_id"])
    assert "ValueError: kaboom" in proc.stdout


def test_backend_option_overrides_the_environment(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    [ok] = cli.json("run", "greet", "--backend", f"file:{other}")
    assert other.is_dir()
    assert not (tmp_path / "store").exists()
    assert cli.json("runs") == []  # ASYNCFLOW_BACKEND: the other folder is untouched
    [listed] = cli.json("runs", "--backend", f"file:{other}")
    assert listed["run_id"] == ok["run_id"]
    assert cli.json("show", ok["run_id"], "--backend", f"file:{other}")["status"] == "succeeded"
    assert_usage_error(cli("show", ok["run_id"]), ok["run_id"])


def test_default_backend_is_dot_asyncflow_in_the_current_folder(cli: Cli, tmp_path: Path) -> None:
    cli.backend = None  # no ASYNCFLOW_BACKEND
    proc = cli("run", "greet", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / ".asyncflow").is_dir()
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        pytest.param(["run", "greet", "{not json"], [], id="invalid-args-json"),
        pytest.param(["run", "no_such_trigger"], ["no_such_trigger"], id="unknown-trigger"),
        pytest.param(["show", "424242"], ["424242"], id="unknown-run-id"),
        pytest.param(["show", "424242", "--json"], ["424242"], id="unknown-run-id-json"),
        pytest.param(["run", "greet", "--backend", "ftp://example.com/x"], [], id="bad-url"),
        pytest.param(["runs", "--backend", "nonsense"], ["file:"], id="bad-url-runs"),
        pytest.param(["show", "1", "--backend", "nonsense"], ["file:"], id="bad-url-show"),
        pytest.param(["emit", "bell", "{not json"], [], id="emit-invalid-json"),
        pytest.param(["cancel", "424242"], ["424242"], id="cancel-unknown-run"),
        pytest.param(["retry", "424242"], ["424242"], id="retry-unknown-run"),
        pytest.param(["run", "--key", "k"], ["--key"], id="key-without-trigger"),
    ],
)
def test_bad_input_exits_2_with_one_error_line(
    cli: Cli, argv: list[str], mentions: list[str]
) -> None:
    assert_usage_error(cli(*argv), *mentions)
    assert cli.json("runs") == []  # nothing was recorded


def test_bad_backend_in_the_environment_is_bad_input(cli: Cli) -> None:
    cli.backend = "nonsense"
    assert_usage_error(cli("runs"), "ASYNCFLOW_BACKEND", "nonsense")
    # --backend wins over a broken environment.
    proc = cli("runs", "--backend", "memory:")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "argv", [["runs", "--status", "bogus"], [], ["frobnicate"], ["show"]], ids=str
)
def test_command_line_mistakes_exit_2_with_one_error_line(cli: Cli, argv: list[str]) -> None:
    line = assert_usage_error(cli(*argv))
    assert "--help" in line


def test_emit_wakes_the_waiting_run_and_runs_says_why_runs_wait(cli: Cli) -> None:
    [listening] = cli.json("run", "listen")
    [napping] = cli.json("run", "nap")
    [paused] = cli.json("run", "wait")
    proc = cli("runs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"store: {cli.backend}"
    assert proc.stdout.splitlines()[1].split() == [
        "RUN_ID",
        "WORKFLOW",
        "STATUS",
        "UPDATED",
        "WAITING",
        "FOR",
    ]
    reasons = {
        line.split()[0]: " ".join(line.split()[4:]) for line in proc.stdout.splitlines()[2:]
    }
    assert reasons[listening["run_id"]] == "event bell"
    assert reasons[napping["run_id"]].startswith("time 20")
    assert reasons[paused["run_id"]] == "next invocation"
    [shown] = [r for r in cli.json("runs") if r["run_id"] == napping["run_id"]]
    assert shown["wake_at"] > shown["updated_at"]
    assert "waiting for: event bell" in cli("show", listening["run_id"]).stdout

    results = cli.json("emit", "bell", '{"rings": 2}')
    by_id = {r["run_id"]: r for r in results}
    assert by_id[listening["run_id"]]["result"] == {"rings": 2}
    assert by_id[paused["run_id"]]["status"] == "succeeded"  # a due run, resumed as by `run`
    assert napping["run_id"] not in by_id


def test_cancel_and_retry(cli: Cli) -> None:
    [napping] = cli.json("run", "nap")
    proc = cli("cancel", napping["run_id"])
    assert (proc.returncode, proc.stdout) == (0, f"cancelled {napping['run_id']}\n")
    assert "status: cancelled" in cli("show", napping["run_id"]).stdout
    assert_usage_error(cli("cancel", napping["run_id"]), "cancelled already")

    [failed] = cli.json("run", "flaky", code=1)
    assert failed["error"].endswith("raised ConnectionError: not yet")
    proc = cli("retry", failed["run_id"], "--json", ASYNCFLOW_TEST_FIXED="1")
    assert proc.returncode == 0, proc.stderr
    [retried] = json.loads(proc.stdout)
    assert (retried["run_id"], retried["status"], retried["result"]) == (
        failed["run_id"],
        "succeeded",
        "fixed 5",
    )
    assert_usage_error(cli("retry", failed["run_id"]), "only a failed run")


def test_run_with_a_key_starts_once(cli: Cli) -> None:
    [first] = cli.json("run", "greet", "--key", "once")
    assert cli.json("run", "greet", "--key", "once") == []
    assert [r["run_id"] for r in cli.json("runs")] == [first["run_id"]]


def test_another_scripts_runs_are_one_summary_line_and_no_warnings(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        started = cli("start", "wait")
        assert started.returncode == 0, started.stderr
    examples = Path(__file__).resolve().parent.parent / "examples"
    other = Cli(examples / "cli.py", tmp_path, monkeypatch, capsys)  # same store
    proc = other("run")
    assert (proc.returncode, proc.stderr) == (0, "")  # not a warning per run
    assert "\n2 runs of workflows this script does not define left as they are: wait (2)\n" in (
        proc.stdout
    )


@pytest.mark.procs
def test_a_real_process_exits_0_1_or_2_and_writes_utf_8(tmp_path: Path) -> None:
    """The script run as a user runs it: its exit status, and its output as UTF-8 bytes in a
    UTF-8 locale (no PYTHONIOENCODING)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONIOENCODING"}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", ASYNCFLOW_BACKEND=f"file:{tmp_path / 'store'}")

    def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )

    ok = run("run", "greet", '{"name": "エイダ"}')
    assert ok.returncode == 0, ok.stderr
    assert '\t  result: {"name": "エイダ", "total": 3}\n'.encode() in ok.stdout
    assert "\t    - hello, エイダ\n".encode() in ok.stdout
    failed = run("run", "boom")
    assert failed.returncode == 1, failed.stderr
    assert b"\t  error: ValueError: kaboom\n" in failed.stdout
    bad = run("show", "424242")
    assert bad.returncode == 2
    assert bad.stderr.startswith(b"error: ")
    assert bad.stderr.count(b"\n") == 1
