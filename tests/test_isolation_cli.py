"""The command line with bad records and bad values (issue 9, points 2 to 5), in-process
(tests/helpers/proc_isolation_flow.py loaded afresh per invocation, `main(flow, argv)`):
reported, exit 2, never a traceback; the other runs advance."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from script_cli import ScriptCli

SCRIPT = Path(__file__).resolve().parent / "helpers" / "proc_isolation_flow.py"


class Cli(ScriptCli):
    @property
    def store(self) -> Path:
        return self.cwd / "store"

    def __call__(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = super().__call__(*argv, **env)
        # Never a crash's traceback (a failed run's own is logged, with the run id).
        assert "_cli.py" not in proc.stderr, proc.stderr
        return proc


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(SCRIPT, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(("damage", "loop"), [("not json", "asyncio"), ("a directory", "trio")])
def test_run_runs_and_show_report_a_damaged_record_exit_2_and_advance_the_others(
    cli: Cli, damage: str, loop: str
) -> None:
    first = json.loads(cli("run", "wait", "--json").stdout)[0]["run_id"]
    second = json.loads(cli("run", "wait", "--json").stdout)[0]["run_id"]
    # (the second invocation resumed the first: start a third that stays paused)
    third = json.loads(cli("run", "wait", "--json").stdout)[0]["run_id"]
    path = cli.store / "active" / f"{third}.json"
    if damage == "a directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(b"{not json")
    fourth_proc = cli("run", "wait", "--loop", loop)
    assert fourth_proc.returncode == 2
    assert "status: damaged" in fourth_proc.stdout
    assert f"run_id: {third}" in fourth_proc.stdout
    assert str(path) in fourth_proc.stdout
    assert "status: paused" in fourth_proc.stdout, "the new run started"
    assert "damaged" in fourth_proc.stdout.split("total: ")[1].splitlines()[0], "counted"
    assert fourth_proc.stderr == "", "reported in the summary, not again on stderr"

    runs = cli("runs", "--loop", loop)
    assert runs.returncode == 2
    [line] = [line for line in runs.stdout.splitlines() if third in line]
    assert "damaged" in line
    assert {first, second} <= set(runs.stdout.split())
    assert str(path) in runs.stderr
    listed = cli("runs", "--json")
    assert listed.returncode == 2
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)}[third] == "damaged"

    shown = cli("show", third)
    assert shown.returncode == 2
    assert "status: damaged" in shown.stdout
    assert (path.is_dir()) == (damage == "a directory"), "left as it was"


@pytest.mark.parametrize(
    "args", ['"x\\ud800y"', "[" * 60_000 + "]" * 60_000, '{"n": NaN}'], ids=str.__len__
)
def test_run_args_that_cannot_be_stored_exit_2_with_one_line(cli: Cli, args: str) -> None:
    proc = cli("run", "echo", args)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error: ")
    assert cli("runs", "--json").stdout.strip() == "[]", "nothing stored"


def test_retry_of_a_run_this_script_does_not_define_exits_2_and_leaves_it(cli: Cli) -> None:
    failed = cli("run", "extra", "--json", ASYNCFLOW_TEST_EXTRA="1")
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)[0]["run_id"]
    before = cli("show", run_id, "--json").stdout
    proc = cli("retry", run_id)
    assert proc.returncode == 2
    assert "'extra'" in proc.stderr
    assert "does not define" in proc.stderr
    assert cli("show", run_id, "--json").stdout == before
    assert json.loads(before)["status"] == "failed"


def test_show_and_json_give_a_failures_traceback(cli: Cli) -> None:
    proc = cli("run", "boom", "--json")
    assert proc.returncode == 1
    assert "Traceback" not in cli("run", "boom").stderr, "the CLI prints no traceback"
    [result] = json.loads(proc.stdout)
    assert "in divide" in result["traceback"]
    shown = cli("show", result["run_id"])
    assert "error: ZeroDivisionError: division by zero" in shown.stdout
    assert "traceback:" in shown.stdout
    assert "return n / 0" in shown.stdout
    assert (
        json.loads(cli("show", result["run_id"], "--json").stdout)["traceback"]
        == (result["traceback"])
    )
