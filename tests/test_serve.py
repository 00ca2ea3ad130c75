"""`flow.cli()`'s `serve` command, as a real process on 127.0.0.1
(tests/helpers/proc_cli_flow.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.procs

SCRIPT = Path(__file__).resolve().parent / "helpers" / "proc_cli_flow.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if k != "ASYNCFLOW_TOKEN"}
    full.update(extra, ASYNCFLOW_BACKEND=f"file:{tmp_path / 'store'}")
    return full


@contextmanager
def serving(tmp_path: Path, *argv: str, **extra_env: str) -> Iterator[httpx.Client]:
    """Start `serve` on a free port, wait until /healthz answers, stop it with SIGINT."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "serve", "--port", str(port), *argv],
        cwd=tmp_path,
        env=env(tmp_path, **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.02)  # poll interval, not synchronisation: the loop polls /healthz
            yield http
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_runs_and_lists(tmp_path: Path) -> None:
    with serving(tmp_path) as http:
        r = http.post("/runs", json={"trigger": "greet", "args": {"name": "serve"}})
        assert r.status_code == 200
        assert r.json()[0]["result"] == {"name": "serve", "total": 3}
        (run_id,) = http.post("/start", json={"trigger": "wait"}).json()["run_ids"]
        assert [x["status"] for x in http.post("/resume").json()] == ["paused"]
        assert http.get(f"/runs/{run_id}").json()["logs"] == ["waiting"]
    # What it stored is the script's: the CLI sees it.
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "runs"],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "greet" in out
    assert run_id in out


def test_serve_resumes_due_runs_on_a_period(tmp_path: Path) -> None:
    with serving(tmp_path, "--resume-every", "0.05") as http:
        (run_id,) = http.post("/start", json={"trigger": "wait"}).json()["run_ids"]
        deadline = time.monotonic() + 30
        while http.get(f"/runs/{run_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the run was not resumed"
            time.sleep(0.02)  # poll interval
        assert http.get(f"/runs/{run_id}").json()["logs"] == ["waiting", "done waiting"]


def test_serve_with_a_token(tmp_path: Path) -> None:
    with serving(tmp_path, ASYNCFLOW_TOKEN="s3cret") as http:
        assert http.post("/runs", json={"trigger": "greet"}).status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        assert http.post("/runs", json={"trigger": "greet"}, headers=auth).status_code == 200


def run_cli(
    tmp_path: Path, *argv: str, code: str | None = None
) -> subprocess.CompletedProcess[str]:
    if code is None:
        cmd = [sys.executable, str(SCRIPT), *argv]
    else:
        cmd = [sys.executable, "-c", code, str(SCRIPT), *argv]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=60
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.com", "192.168.1.10"])
def test_a_public_address_needs_a_token(tmp_path: Path, host: str) -> None:
    line = one_line_error(run_cli(tmp_path, "serve", "--host", host))
    assert f"refusing to serve on {host} without a token" in line
    assert "ASYNCFLOW_TOKEN" in line


def test_without_uvicorn_serve_says_what_to_install(tmp_path: Path) -> None:
    # The interpreter is told uvicorn cannot be imported, as where it is not installed.
    hide = (
        "import sys, runpy; sys.modules['uvicorn'] = None; sys.argv = sys.argv[1:];"
        " runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    line = one_line_error(run_cli(tmp_path, "serve", code=hide))
    assert line == "error: serve needs uvicorn: pip install 'asyncflow-durable[server]'"
    # The other commands do not need it.
    assert run_cli(tmp_path, "runs", code=hide).returncode == 0


@pytest.mark.parametrize(
    ("argv", "mention"),
    [
        (["--port", "70000"], "invalid port"),
        (["--resume-every", "0"], "invalid SECONDS"),
        (["--resume-every", "soon"], "invalid SECONDS"),
    ],
)
def test_bad_options(tmp_path: Path, argv: list[str], mention: str) -> None:
    assert mention in one_line_error(run_cli(tmp_path, "serve", *argv))
