"""What the command line tells a person: the RUN SUMMARY (English and Japanese), no silent
no-ops, the store it uses, `start`, `purge`, `run --until-done`, `runs` and `show` layout.

In-process (`main(flow, argv)` with capsys), each on asyncio and trio (`--loop`); the real
processes (pipes, signals, a terminal) are in tests/test_cli_processes.py.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncflow
from asyncflow import Context
from asyncflow._cli import main

LOOPS = ["asyncio", "trio"]


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def english(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)


def make_flow(store: Path) -> asyncflow.Flow:
    flow = asyncflow.setup(f"file:{store}")

    @flow.sideeffect()
    async def price(c: Context, item: str) -> int:
        return 100

    @flow.workflow()
    async def watch(c: Context, args: Any) -> str:
        await c.log(f"watching {args}")
        if await price(c, args) <= 100:
            return "bought"
        return "not yet"

    @flow.workflow()
    async def quiet(c: Context) -> int:
        return 7

    @flow.workflow()
    async def wait(c: Context) -> None:
        await c.pause_once()

    @flow.workflow()
    async def nap(c: Context) -> None:
        await c.sleep(3600)

    @flow.workflow()
    async def listen(c: Context) -> Any:
        return await c.wait_event("bell")

    @flow.workflow()
    async def boom(c: Context) -> None:
        raise ValueError("kaboom")

    return flow


class Cli:
    def __init__(self, flow: asyncflow.Flow, loop: str, capsys: pytest.CaptureFixture[str]):
        self.flow = flow
        self.loop = loop
        self.capsys = capsys

    def __call__(self, *argv: str, code: int = 0) -> str:
        self.capsys.readouterr()
        try:
            status = main(self.flow, [*argv, "--loop", self.loop])
        except SystemExit as exc:  # argparse's errors
            status = exc.code  # type: ignore[assignment]
        out, self.err = self.capsys.readouterr()
        assert status == code, (out, self.err)
        return out

    def json(self, *argv: str, code: int = 0) -> Any:
        return json.loads(self(*argv, "--json", code=code))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def cli(store: Path, loop: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(make_flow(store), loop, capsys)


def test_summary_gives_results_why_runs_wait_totals_and_the_store(cli: Cli, store: Path) -> None:
    out = cli("run", "watch", '"lemon"')
    assert '\t  result: "bought"\n' in out  # the README's example, which never showed it
    out = cli("run", "wait")
    assert "\t  status: paused\n\t  waiting for: next invocation\n" in out
    out = cli("run", "quiet")
    assert "\t  result: 7\n" in out
    assert "logs:" not in out  # no empty header for a run without logs
    assert out.endswith(f"total: 2 succeeded\nstore: file:{store}\n")  # quiet, wait
    cli("run", "wait")
    assert cli("run", "boom", code=1).endswith(
        f"total: 1 succeeded, 1 failed\nstore: file:{store}\n"
    )


def test_a_paused_run_says_what_it_waits_for(cli: Cli) -> None:
    assert "\t  waiting for: time 20" in cli("run", "nap")
    assert "\t  waiting for: event bell\n" in cli("run", "listen")


def test_summary_in_japanese_by_locale_or_option(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, store: Path
) -> None:
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    out = cli("run", "watch", '"レモン"')
    run_id = re.search(r"run_id: (\S+)", out)
    assert run_id
    assert out == (
        "\n---------RUN SUMMARY---------\n"
        "1件のワークフローが実行されました\n"
        "\t1件目\n"
        "\t  ワークフロー名: watch\n"
        f"\t  run_id: {run_id[1]}\n"
        "\t  状態: succeeded\n"
        '\t  結果: "bought"\n'
        "\t  ログ:\n"
        "\t    - watching レモン\n"
        "合計: succeeded 1件\n"
        f"保存先: file:{store}\n"
    )
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert "1 workflow run\n" in cli("run", "quiet")
    assert "1件のワークフローが実行されました\n" in cli("--lang", "ja", "run", "quiet")
    assert "1件のワークフローが実行されました\n" in cli("run", "quiet", "--lang", "ja")
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    assert "1 workflow run\n" in cli("run", "quiet", "--lang", "en")
    assert "\t  待機中: 次回の実行\n" in cli("run", "wait")


def test_json_keeps_its_keys_and_adds_what_a_run_waits_for(cli: Cli) -> None:
    [napping] = cli.json("run", "nap")
    assert set(napping) >= {"workflow", "run_id", "status", "logs", "result", "error"}
    assert napping["wake_at"] > time.time() + 3000
    assert napping["wait_event"] is None
    [listening] = cli.json("run", "listen")
    assert (listening["wake_at"], listening["wait_event"]) == (None, "bell")


def test_an_event_nothing_takes_says_so(cli: Cli) -> None:
    out = cli("emit", "bel")  # a typo: nothing listens
    assert "nothing took event 'bel'" in out
    cli("run", "listen")
    out = cli("emit", "bell", '"ring"')
    assert "nothing took" not in out
    assert '\t  result: "ring"\n' in out
    cli.json("emit", "bell")  # JSON stays a list of results; the note goes to stderr
    assert "nothing took event 'bell'" in cli.err


def test_a_key_used_already_names_its_run(cli: Cli) -> None:
    [first] = cli.json("run", "watch", '"lemon"', "--key", "k1")
    out = cli("run", "watch", '"melon"', "--key", "k1")
    assert "0 workflow runs\n" in out
    assert f"key 'k1' was used already by run {first['run_id']} of watch (succeeded)" in out
    out = cli("start", "watch", '"melon"', "--key", "k1")
    assert f"key 'k1' was used already by run {first['run_id']} of watch (succeeded)" in out
    assert not [line for line in out.splitlines() if line.startswith("started")]
    started = cli.json("start", "watch", '"melon"', "--key", "k2")
    assert started["run_ids"] == started["started"]
    assert cli.json("start", "watch", "--key", "k2") == {
        "run_ids": started["run_ids"],
        "started": [],
    }


def test_start_records_runs_that_the_next_run_executes(cli: Cli) -> None:
    out = cli("start", "watch", '"lemon"')
    [line, store_line] = out.splitlines()
    run_id = line.removeprefix("started ")
    assert store_line.startswith("store: file:")
    assert cli.json("show", run_id)["status"] == "pending"
    [result] = cli.json("run")
    assert (result["run_id"], result["result"]) == (run_id, "bought")
    cli("start", "no_such", code=2)
    assert "no_such" in cli.err


def test_runs_held_by_another_invocation_are_counted(
    store: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = make_flow(store)
    cli = Cli(flow, loop, capsys)
    [paused] = cli.json("run", "wait")

    async def hold_it_and_run() -> str:
        async with flow, flow.backend.claim(("active", paused["run_id"])) as held:
            assert held
            return await anyio.to_thread.run_sync(cli, "run")

    out = anyio.run(hold_it_and_run, backend=loop)
    assert "0 workflow runs\n" in out
    assert "1 due run skipped: another invocation holds it" in out


def test_runs_of_workflows_the_script_does_not_define_are_one_line(
    cli: Cli, store: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli("start", "wait")
    cli("start", "wait")
    other = asyncflow.setup(f"file:{store}")

    @other.workflow()
    async def unrelated(c: Context) -> None: ...

    out = Cli(other, loop, capsys)("run")
    assert out.count("does not define") == 1
    assert "2 runs of workflows this script does not define left as they are: wait (2)" in out
    assert capsys.readouterr().err == ""


def test_runs_names_its_store_and_aligns_wide_names(
    store: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = make_flow(store)

    @flow.workflow()
    async def 買いたいもの追加(c: Context) -> None:
        await c.pause_once()

    cli = Cli(flow, loop, capsys)
    cli("run", "quiet")
    cli("run", "買いたいもの追加")
    lines = cli("runs").splitlines()
    assert lines[0] == f"store: file:{store}"

    def column(line: str, pattern: str) -> int:  # display columns before `pattern`
        found = re.search(pattern, line)
        assert found, (pattern, line)
        before = line[: found.start()]
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in before)

    assert (
        column(lines[1], "STATUS") == column(lines[2], "succeeded") == column(lines[3], "paused")
    )
    date = r" \d{4}-\d\d-\d\dT"
    assert column(lines[1], " UPDATED") == column(lines[2], date) == column(lines[3], date)
    cli("show", "nope", code=2)
    assert cli.err == f"error: no run with id 'nope' (store: file:{store})\n"


def test_an_empty_store_says_so(cli: Cli, store: Path) -> None:
    assert cli("runs") == f"store: file:{store}\nno runs\n"


def test_show_numbers_steps_as_branch_paths_do(
    store: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = asyncflow.setup(f"file:{store}")

    @flow.sideeffect()
    async def fetch(c: Context, n: int) -> int:
        return n * 10

    @flow.workflow()
    async def fan(c: Context) -> Any:
        await c.log("start")

        async def one(c: Context) -> int:
            return await fetch(c, 1)

        async def two(c: Context) -> int:
            return await fetch(c, 2)

        return await c.gather(one, two)

    cli = Cli(flow, loop, capsys)
    [run] = cli.json("run", "fan")
    shown = cli.json("show", run["run_id"])
    branches = {s["branch"] for s in shown["steps"] if s["branch"]}
    assert branches == {"1.0", "1.1"}  # the gather is the workflow's step 1, from 0
    lines = cli("show", run["run_id"]).splitlines()
    steps = lines[lines.index("steps:") + 1 : lines.index("logs:")]
    assert [line.split()[0] for line in steps] == ["0", "1", "1.0/0", "1.1/0"]
    assert steps[1].split()[1:] == ["gather", "of", "2", "branches"]
    assert steps[2].split()[2].endswith("fetch")
    assert steps[3].split()[-1] == "20"


def test_options_before_or_after_the_command(cli: Cli, tmp_path: Path, loop: str) -> None:
    other = f"file:{tmp_path / 'other'}"
    cli("--backend", other, "run", "quiet")
    cli("run", "quiet", "--backend", other)
    assert len(cli.json("--backend", other, "runs")) == 2
    assert len(cli.json("runs", "--backend", other)) == 2
    assert cli.json("runs") == []
    cli("--json", "runs")


def test_serve_takes_the_common_options(
    cli: Cli, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["--backend", f"file:{tmp_path}", "serve", "--loop", "trio", "--port", "1"]
    assert main(cli.flow, argv) == 2
    assert "asyncio only" in capsys.readouterr().err


def test_run_until_done_invokes_until_nothing_is_due(
    store: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = asyncflow.setup(f"file:{store}")

    @flow.workflow()
    async def steps(c: Context) -> str:
        await c.log("one")
        await c.pause_once()
        await c.sleep(0.2)
        await c.log("two")
        await c.sleep(0.2)
        return "done"

    @flow.workflow()
    async def listen(c: Context) -> Any:
        return await c.wait_event("never")

    cli = Cli(flow, loop, capsys)
    cli("run", "listen")
    started = time.monotonic()
    out = cli("run", "steps", "--until-done", "--key", "once")
    assert time.monotonic() - started >= 0.4  # it slept until each timer
    assert "2 workflow runs\n" not in out  # the listener is not due: never advanced
    assert '\t  result: "done"\n' in out
    assert "\t    - two\n" in out
    assert "total: 1 succeeded\n" in out
    assert cli("run", "--until-done").startswith("\n---------RUN SUMMARY---------\n0 workflow")


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_purge_deletes_finished_runs_past_the_retention(
    tmp_path: Path, loop: str, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    backend = "memory:" if kind == "memory" else f"file:{tmp_path / 'store'}"
    flow = make_flow(tmp_path / "unused")
    flow.backend = asyncflow._flow.open_backend(backend)
    cli = Cli(flow, loop, capsys)
    [ok] = cli.json("run", "quiet", "--key", "once")
    [failed] = cli.json("run", "boom", code=1)
    [napping] = cli.json("run", "nap")
    cli("cancel", napping["run_id"])
    [paused] = cli.json("run", "listen")

    # Finished an hour ago or more: none of them.
    assert cli.json("purge", "--finished-before", "1h") == {"purged": [], "unreadable": []}
    out = cli("purge", "--finished-before", "0s", "--status", "failed", "--dry-run")
    assert out.startswith("would purge 1 run (failed) that finished before ")
    assert failed["run_id"] in out
    assert cli.json("show", failed["run_id"])["status"] == "failed"

    purged = cli.json("purge", "--finished-before", "0s", "--status", "failed")
    assert purged["purged"] == [failed["run_id"]]
    cli("show", failed["run_id"], code=2)
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 60))
    out = cli("purge", "--finished-before", future)
    assert out.startswith("purged 2 runs (succeeded, failed, cancelled) that finished before")
    assert [r["run_id"] for r in cli.json("runs")] == [paused["run_id"]]
    # The key went with its run: it starts a new one.
    [again] = cli.json("run", "quiet", "--key", "once")
    assert again["run_id"] != ok["run_id"]
    cli("purge", "--finished-before", "yesterday", code=2)
    assert "invalid WHEN" in cli.err
    cli("purge", code=2)


@pytest.mark.parametrize("kind", ["s3", "dynamodb"])
def test_purge_on_the_aws_stores(
    aws: Any,
    kind: str,
    loop: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    url = aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url()
    cli = Cli(make_flow(tmp_path / "unused"), loop, capsys)
    [ok] = cli.json("run", "quiet", "--backend", url, "--key", "k")
    [failed] = cli.json("run", "boom", "--backend", url, code=1)
    [paused] = cli.json("run", "listen", "--backend", url)
    purged = cli.json("purge", "--finished-before", "0s", "--status", "failed", "--backend", url)
    assert purged == {"purged": [failed["run_id"]], "unreadable": []}
    purged = cli.json("purge", "--finished-before", "0s", "--backend", url)
    assert purged == {"purged": [ok["run_id"]], "unreadable": []}
    assert [r["run_id"] for r in cli.json("runs", "--backend", url)] == [paused["run_id"]]
    [again] = cli.json("run", "quiet", "--backend", url, "--key", "k")
    assert again["run_id"] != ok["run_id"]
    assert cli("runs", "--backend", url).splitlines()[0] == f"store: {url}"
