"""The examples, end to end, through their CLI, as a user runs them.

Each invocation is a fresh `python examples/X.py run ...` process in a temporary folder with
no ASYNCFLOW_BACKEND, so the state lives in the default `file:.asyncflow` there. The logs
and statuses are the ones the seed README shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.procs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def invoke(tmp_path: Path, example: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("ASYNCFLOW_BACKEND", None)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / example), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def run_json(tmp_path: Path, example: str, *argv: str) -> tuple[list[dict], str]:
    """`run ... --json`: exit 0, the parsed results and what the side effects printed."""
    proc = invoke(tmp_path, example, "run", *argv, "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for r in results:
        assert set(r) >= {"workflow", "run_id", "status", "logs", "result", "error"}
    return results, proc.stderr


def summary(*runs: tuple[str, str, str, list[str]], store: Path, result: str | None = None) -> str:
    """The human RUN SUMMARY for (workflow, run_id, status, logs) blocks (``result``: the
    JSON of a succeeded run's result; paused runs wait for the next invocation)."""
    n = len(runs)
    lines = ["", "---------RUN SUMMARY---------", f"{n} workflow run{'' if n == 1 else 's'}"]
    totals: dict[str, int] = {}
    for i, (workflow, run_id, status, logs) in enumerate(runs, 1):
        totals[status] = totals.get(status, 0) + 1
        lines += [
            f"\t{i}.",
            f"\t  workflow: {workflow}",
            f"\t  run_id: {run_id}",
            f"\t  status: {status}",
        ]
        if result is not None:
            lines.append(f"\t  result: {result}")
        if status == "paused":
            lines.append("\t  waiting for: next invocation")
        lines.append("\t  logs:")
        lines += [f"\t    - {log}" for log in logs]
    lines.append("total: " + ", ".join(f"{k} {s}" for s, k in totals.items()))
    lines.append(f"store: file:{store / '.asyncflow'}")
    return "\n".join(lines) + "\n"


def test_infinite_loop_pauses_once_per_lap(tmp_path: Path) -> None:
    [first], _ = run_json(tmp_path, "infinite_loop.py", "loop")
    assert first["workflow"] == "loop"
    assert first["status"] == "paused"
    assert first["logs"] == ["loop: 0週目開始"]
    assert (tmp_path / ".asyncflow").is_dir()  # the default backend, in the current folder

    proc = invoke(tmp_path, "infinite_loop.py", "run")
    assert proc.returncode == 0, proc.stderr
    expected = ["loop: 0週目開始", "loop: 0週目おわり", "loop: 1週目開始"]
    assert proc.stdout == summary(("loop", first["run_id"], "paused", expected), store=tmp_path)

    [third], _ = run_json(tmp_path, "infinite_loop.py")
    assert third["run_id"] == first["run_id"]
    assert third["status"] == "paused"
    assert third["logs"] == [*expected, "loop: 1週目おわり", "loop: 2週目開始"]


def test_infinite_loop_with_sideeffect_sends_each_message_once(tmp_path: Path) -> None:
    script = "infinite_loop_with_sideeffect.py"
    msg = "sending message to your phone...:{}".format
    all_logs = [
        msg("start!"),
        msg("first loop... value is 1"),
        msg("first loop... value is 2"),
        msg("finish!"),
    ]

    [first], sent = run_json(tmp_path, script, "loop")
    assert (first["workflow"], first["status"]) == ("loop", "paused")
    assert first["logs"] == all_logs[:2]
    assert sent.splitlines() == all_logs[:2]

    [second], sent = run_json(tmp_path, script)
    assert (second["run_id"], second["status"]) == (first["run_id"], "paused")
    assert second["logs"] == all_logs[:3]
    assert sent.splitlines() == all_logs[2:3]  # replay sends nothing again

    proc = invoke(tmp_path, script, "run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == summary(("loop", first["run_id"], "succeeded", all_logs), store=tmp_path)
    assert proc.stderr.splitlines() == all_logs[3:]

    # Finished: a further invocation has nothing to do and sends nothing.
    results, sent = run_json(tmp_path, script)
    assert results == []
    assert sent == ""


def test_watch_price_retries_until_cheap_enough(tmp_path: Path) -> None:
    args = json.dumps({"item_name": "レモン", "price": 150}, ensure_ascii=False)
    [first], _ = run_json(tmp_path, "watch_price.py", "買いたいもの追加", args)
    assert (first["workflow"], first["status"]) == ("買いたいもの追加", "paused")
    assert first["logs"] == ["買いたいもの追加: レモン", "1回目: レモンは200で買えませんでした"]

    [second], _ = run_json(tmp_path, "watch_price.py")
    assert (second["run_id"], second["status"]) == (first["run_id"], "paused")
    assert second["logs"] == [*first["logs"], "2回目: レモンは300で買えませんでした"]

    proc = invoke(tmp_path, "watch_price.py", "run")
    assert proc.returncode == 0, proc.stderr
    logs = [*second["logs"], "3回目: レモンは100円!"]
    assert proc.stdout == summary(
        ("買いたいもの追加", first["run_id"], "succeeded", logs), store=tmp_path, result="100"
    )

    [run] = json.loads(invoke(tmp_path, "watch_price.py", "runs", "--json").stdout)
    assert (run["run_id"], run["status"], run["result"]) == (first["run_id"], "succeeded", 100)


def test_watch_price_watches_several_items_at_once(tmp_path: Path) -> None:
    def add(item: str, price: int) -> list[dict]:
        args = json.dumps({"item_name": item, "price": price}, ensure_ascii=False)
        return run_json(tmp_path, "watch_price.py", "買いたいもの追加", args)[0]

    [lemon] = add("レモン", 150)
    results = {r["run_id"]: r for r in add("りんご", 250)}  # also advances the lemon
    assert len(results) == 2
    assert results.pop(lemon["run_id"])["logs"][-1] == "2回目: レモンは300で買えませんでした"
    [apple] = results.values()
    assert apple["status"] == "succeeded"
    assert apple["logs"] == ["買いたいもの追加: りんご", "1回目: りんごは200円!"]
    assert apple["result"] == 200

    [lemon_again] = run_json(tmp_path, "watch_price.py")[0]
    assert lemon_again["run_id"] == lemon["run_id"]
    assert (lemon_again["status"], lemon_again["result"]) == ("succeeded", 100)


def test_cli_example_hello(tmp_path: Path) -> None:
    [world], sent = run_json(tmp_path, "cli.py", "hello")
    assert (world["workflow"], world["status"]) == ("hello", "succeeded")
    assert world["logs"] == ["hello, world"]
    assert (world["result"], world["error"]) == ("hello, world", None)
    assert sent == "hello, world\n"

    proc = invoke(tmp_path, "cli.py", "run", "hello", '{"name": "Ada"}')
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"^\t  run_id: (\S+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    assert match[1] != world["run_id"]
    assert proc.stdout == summary(
        ("hello", match[1], "succeeded", ["hello, Ada"]), store=tmp_path, result='"hello, Ada"'
    )
    assert proc.stderr == "hello, Ada\n"


def test_compare_prices_asks_all_shops_at_once_and_replays_without_asking(
    tmp_path: Path,
) -> None:
    args = json.dumps({"item_name": "レモン"}, ensure_ascii=False)
    [first], asked = run_json(tmp_path, "compare_prices.py", "値段比較", args)
    assert (first["workflow"], first["status"]) == ("値段比較", "paused")
    # The branches log as they finish: compare without their order.
    assert sorted(first["logs"]) == sorted(
        ["八百屋: 120円", "スーパー: 110円", "コンビニ: 応答なし (TimeoutError, 2回)"]
    )
    attempts = [line.split("に")[0] for line in asked.splitlines()]
    assert sorted(attempts) == sorted(["八百屋", "スーパー", "スーパー", "コンビニ", "コンビニ"])

    [second], asked = run_json(tmp_path, "compare_prices.py")
    assert (second["run_id"], second["status"]) == (first["run_id"], "succeeded")
    assert second["result"] == {"shop": "スーパー", "price": 110}
    assert second["logs"] == [*first["logs"], "スーパーでレモンを110円で買います"]
    assert asked == "", "the replay asked no shop again"


def test_cli_example_event_runs_the_next_workflow_in_the_same_invocation(tmp_path: Path) -> None:
    results, _ = run_json(tmp_path, "cli.py", "処理1")
    assert [(r["workflow"], r["status"], r["logs"]) for r in results] == [
        ("処理1", "succeeded", ["処理1: event1 を発行"]),
        ("処理2", "succeeded", ["処理2: event1 を受信 (処理1 から)"]),
    ]
    proc = invoke(tmp_path, "cli.py", "emit", "event1", '{"from": "外"}', "--json")
    assert proc.returncode == 0, proc.stderr
    [outside] = json.loads(proc.stdout)
    assert (outside["workflow"], outside["logs"]) == ("処理2", ["処理2: event1 を受信 (外 から)"])


def test_approval_waits_for_its_event_then_deploys(tmp_path: Path) -> None:
    [deploy], sent = run_json(tmp_path, "approval.py", "デプロイ", '{"version": "1.2.0"}')
    run_id = deploy["run_id"]
    assert (deploy["status"], deploy["logs"]) == ("paused", ["承認待ち: 1.2.0"])
    assert sent == f"1.2.0 のデプロイ承認待ち: emit 承認:{run_id}\n"

    proc = invoke(tmp_path, "approval.py", "runs")
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^{run_id}  .*paused .*event 承認:{run_id} \(until ", proc.stdout, re.M)
    assert run_json(tmp_path, "approval.py")[0] == [], "a waiting run is not replayed"
    proc = invoke(tmp_path, "approval.py", "emit", f"承認:{run_id}-other", "--json")
    assert json.loads(proc.stdout) == [], "another approval wakes nothing"

    proc = invoke(tmp_path, "approval.py", "emit", f"承認:{run_id}", '{"承認者": "佐藤"}')
    assert proc.returncode == 0, proc.stderr
    logs = ["承認待ち: 1.2.0", "佐藤 さんが承認", "1.2.0 を本番に反映しました"]
    assert proc.stdout == summary(
        ("デプロイ", run_id, "succeeded", logs),
        store=tmp_path,
        result='"1.2.0 を本番に反映しました"',
    )
    assert proc.stderr == "", "the notification was sent once, in the first invocation"


def test_home_security_reacts_to_state_changes(tmp_path: Path) -> None:
    def emit(*argv: str) -> list[tuple[str, list[str]]]:
        proc = invoke(tmp_path, "home_security.py", "emit", *argv, "--json")
        assert proc.returncode == 0, proc.stderr
        return [(r["workflow"], r["logs"]) for r in json.loads(proc.stdout)]

    assert emit("外出") == [("外出", []), ("警戒モード", ["警戒モード: オン"])]
    proc = invoke(tmp_path, "home_security.py", "emit", "モーションセンサー", '{"場所": "玄関"}')
    assert proc.returncode == 0, proc.stderr
    assert "\t    - 侵入者を検知: 玄関\n" in proc.stdout
    assert proc.stderr == "侵入者を検知: 玄関\n"
    assert emit("外出") == [("外出", [])], "already away: no change, no run"
    assert emit("帰宅") == [("帰宅", []), ("警戒モード", ["警戒モード: オフ"])]
    assert emit("モーションセンサー", '{"場所": "居間"}') == [
        ("モーションセンサー", []),
        ("侵入チェック", ["在宅中の動き: 居間 (異常なし)"]),
    ]


def test_reminder_sleeps_durably_until_its_time(tmp_path: Path) -> None:
    # Real processes on the real clock: the deadlines are a few seconds away, and the test
    # polls (with a deadline) instead of sleeping.
    start = datetime.now(timezone.utc)

    # Both reminders are due 8 s after the start: the first three commands must pass before
    # (each a Python process: over a second apiece on a loaded machine, so 1 s was too short).
    def task(name: str, seconds: float) -> str:
        deadline = (start + timedelta(seconds=seconds)).isoformat()
        args = {"task": name, "deadline": deadline, "remind_before_s": seconds - 8}
        return json.dumps(args, ensure_ascii=False)

    [done_in_time], _ = run_json(tmp_path, "reminder.py", "締め切り", task("レポート", 40))
    [late], _ = run_json(tmp_path, "reminder.py", "締め切り", task("掃除", 10))
    assert done_in_time["status"] == late["status"] == "paused"
    proc = invoke(tmp_path, "reminder.py", "runs", "--status", "paused")
    assert proc.stdout.count("  time ") == 2, proc.stdout

    def poll(until: Callable[[dict[str, dict]], bool]) -> dict[str, dict]:
        seen: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            results, _ = run_json(tmp_path, "reminder.py")
            seen.update({r["run_id"]: r for r in results})
            if until(seen):
                return seen
        raise AssertionError(f"not reached in time: {seen}")

    seen = poll(lambda s: all("リマインド" in r["logs"][-1] for r in s.values()) and len(s) == 2)
    assert seen[done_in_time["run_id"]]["logs"][-1] == "レポート: リマインド"

    proc = invoke(tmp_path, "reminder.py", "emit", "完了:レポート", "--json")
    [done] = json.loads(proc.stdout)
    assert (done["run_id"], done["result"]) == (done_in_time["run_id"], "完了")

    seen = poll(lambda s: s.get(late["run_id"], {}).get("status") == "succeeded")
    assert seen[late["run_id"]]["result"] == "超過"
    assert seen[late["run_id"]]["logs"][-1] == "掃除: 締め切り超過"
