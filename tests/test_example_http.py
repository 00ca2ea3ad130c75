"""examples/watch_price_http.py end to end: its own price service as a process, and the
watcher as CLI invocations, as `serve`, and as a Lambda handler
(tests/helpers/proc_lambda_driver.py), all on one backend folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from lambda_events import scheduled, url

pytestmark = pytest.mark.procs

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "watch_price_http.py"
LEMON = {"item_name": "レモン", "price": 150}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], ready_url: str) -> Iterator[None]:
    """Run ``argv`` until the block ends (SIGINT, then a wait); ready once ``ready_url``
    answers 200."""
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(ready_url).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, f"{argv} did not start"
            time.sleep(0.02)  # poll interval; the loop polls readiness
        yield
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    full = {
        **os.environ,
        "PYTHONIOENCODING": "utf-8",
        "ASYNCFLOW_BACKEND": f"file:{tmp_path / 'store'}",
        "PRICE_SERVICE_URL": f"http://127.0.0.1:{port}",
    }
    service = [sys.executable, str(SCRIPT), "price-service", "--port", str(port)]
    with process(service, full, f"http://127.0.0.1:{port}/healthz"):
        yield full


def cli(env: dict[str, str], *argv: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--json"],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_as_a_command(env: dict[str, str]) -> None:
    first = cli(env, "run", "買いたいもの追加", json.dumps(LEMON))
    assert [(r["status"], r["logs"][-1]) for r in first] == [
        ("paused", "1回目: レモンは200で買えませんでした")
    ]
    assert cli(env, "run")[0]["logs"][-1] == "2回目: レモンは300で買えませんでした"
    (last,) = cli(env, "run")
    assert (last["status"], last["result"]) == ("succeeded", 100)
    assert last["logs"] == [
        "買いたいもの追加: レモン",
        "1回目: レモンは200で買えませんでした",
        "2回目: レモンは300で買えませんでした",
        "3回目: レモンは100円!",
    ]


def test_as_a_server_resuming_on_its_own(env: dict[str, str]) -> None:
    port = free_port()
    argv = [sys.executable, str(SCRIPT), "serve", "--port", str(port), "--resume-every", "0.05"]
    base = f"http://127.0.0.1:{port}"
    with process(argv, env, f"{base}/healthz"), httpx.Client(base_url=base) as http:
        (run,) = http.post("/runs", json={"trigger": "買いたいもの追加", "args": LEMON}).json()
        assert run["status"] == "paused"
        deadline = time.monotonic() + 30
        while (shown := http.get(f"/runs/{run['run_id']}").json())["status"] != "succeeded":
            assert time.monotonic() < deadline, shown
            time.sleep(0.02)  # poll interval
        assert shown["result"] == 100
        fetched = [s["value"] for s in shown["steps"] if s["kind"] == "sideeffect"]
        assert fetched == [200, 300, 100]


def test_as_a_lambda_handler(env: dict[str, str]) -> None:
    mikan = {"item_name": "みかん", "price": 150}
    events = [
        url({"trigger": "買いたいもの追加", "args": mikan}),
        scheduled(),
        {"trigger": "買いたいもの追加", "args": LEMON},
        scheduled(),
    ]
    driver = str(ROOT / "tests" / "helpers" / "proc_lambda_driver.py")
    proc = subprocess.run(
        [sys.executable, driver, "watch_price_http.handler"],
        input=json.dumps([{"event": e} for e in events]),
        env={**env, "PYTHONPATH": str(SCRIPT.parent), "AWS_LAMBDA_FUNCTION_NAME": "watch"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line)["ok"] for line in proc.stdout.splitlines()]
    assert answers[0]["statusCode"] == 200
    (first,) = json.loads(answers[0]["body"])
    assert first["status"] == "paused"
    assert first["logs"][-1] == "1回目: みかんは200で買えませんでした"
    assert [r["logs"][-1] for r in answers[1]] == ["2回目: みかんは300で買えませんでした"]
    # The new lemon run first, then the resumed みかん run.
    assert [(r["logs"][0], r["status"], r["result"]) for r in answers[2]] == [
        ("買いたいもの追加: レモン", "paused", None),
        ("買いたいもの追加: みかん", "succeeded", 100),
    ]
    assert [r["logs"][-1] for r in answers[3]] == ["2回目: レモンは300で買えませんでした"]


def test_a_price_service_that_is_down_is_asked_again_next_time(env: dict[str, str]) -> None:
    down = {**env, "PRICE_SERVICE_URL": f"http://127.0.0.1:{free_port()}"}
    (first,) = cli(down, "run", "買いたいもの追加", json.dumps(LEMON))
    assert first["status"] == "paused"
    assert first["logs"][-1] == "1回目: 値段を取得できませんでした (ConnectError)"
    (second,) = cli(env, "run")  # the service is back
    assert second["logs"][-1] == "2回目: レモンは200で買えませんでした"
