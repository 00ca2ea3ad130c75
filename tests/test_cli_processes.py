"""The command line as real processes, where only a real process shows it: a reader that
closes the pipe (`| head`), Ctrl-C (SIGINT) on asyncio and trio, the progress line on a
terminal (a pseudo-terminal from the `pty` module) and its absence in pipes."""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import asyncflow
from asyncflow import Context

SCRIPT = Path(__file__).resolve().parent / "helpers" / "proc_cli_flow.py"

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and terminals"),
    pytest.mark.procs,
]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONIOENCODING": "utf-8",
        "ASYNCFLOW_BACKEND": f"file:{tmp_path / 'store'}",
        "LANG": "C.UTF-8",
        **extra,
    }


def test_a_reader_closing_the_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    # 1,000 runs listed: more than a pipe holds, so the script is still writing when the real
    # `head` has its lines and exits.
    start_runs(tmp_path, 1000)
    command = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPT))} runs 2>err.txt"
        " | head -n 2; echo ${PIPESTATUS[0]} > status.txt"
    )
    proc = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True
    )
    assert proc.stdout.splitlines()[1].split()[0] == "RUN_ID"
    assert (tmp_path / "err.txt").read_text() == ""  # no BrokenPipeError, no traceback
    assert (tmp_path / "status.txt").read_text().strip() == "141"  # as if killed by SIGPIPE


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_ctrl_c_is_one_line_and_exit_130_on_both_loops(tmp_path: Path, loop: str) -> None:
    mark = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "run", "hang", "--loop", loop],
        cwd=tmp_path,
        env=env(tmp_path, ASYNCFLOW_TEST_MARK=str(mark)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not mark.exists():  # the side effect is running: the run is mid-way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the side effect never started"
            time.sleep(0.02)  # poll interval, not synchronisation: the loop polls the file
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err) == (130, "error: interrupted\n")
    assert out == ""


def start_runs(tmp_path: Path, n: int) -> None:
    flow = asyncflow.setup(f"file:{tmp_path / 'store'}")

    @flow.workflow()
    async def greet(c: Context) -> None: ...

    async def start() -> None:
        async with flow, anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(flow.start, "greet")

    anyio.run(start)


def run_on_a_terminal(tmp_path: Path, *argv: str) -> tuple[int, str, bytes]:
    """Run the script with stderr on a pseudo-terminal, stdout on a pipe; return the exit
    status, stdout and what the terminal received."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *argv],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's last writer (the script) is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    return proc.wait(timeout=30), out, seen


def test_progress_is_drawn_on_a_terminal_only(tmp_path: Path) -> None:
    start_runs(tmp_path, 200)
    status, out, terminal = run_on_a_terminal(tmp_path, "run")
    assert status == 0
    assert b"\r\x1b[K0/200 runs done, 0 failed, " in terminal
    assert terminal.endswith(b"\r\x1b[K")  # erased before the summary
    assert "200 workflow runs\n" in out
    assert "\x1b" not in out
    assert "runs done" not in out

    start_runs(tmp_path, 20)
    status, out, terminal = run_on_a_terminal(tmp_path, "run", "--json")
    assert (status, terminal) == (0, b"")
    assert out.startswith("[")

    start_runs(tmp_path, 20)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "run"],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "20 workflow runs\n" in proc.stdout


def test_serve_logs_each_request_and_each_invocation(tmp_path: Path) -> None:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "serve", "--port", str(port), "--resume-every", "0.05"],
        cwd=tmp_path,
        env=env(tmp_path),
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
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.02)  # poll interval: the loop polls /healthz
            assert http.post("/runs", json={"trigger": "greet"}).status_code == 200
            (run_id,) = http.post("/start", json={"trigger": "wait"}).json()["run_ids"]
            while http.get(f"/runs/{run_id}").json()["status"] != "succeeded":
                assert time.monotonic() < deadline, "the run was not resumed"
                time.sleep(0.02)  # poll interval: resumed in the background
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    log = out + err
    assert '"POST /runs HTTP/1.1" 200' in log  # the access log: one line per request
    assert '"POST /start HTTP/1.1" 200' in log
    # One line per invocation: the request's, and the periodic one that finished `wait`.
    assert err.count("asyncflow: invocation advanced 1 run (1 succeeded) in ") >= 2
    assert err.count("asyncflow: invocation advanced 1 run (1 paused) in ") == 1
    # Idle periods are not logged (DEBUG); one that skipped a run held elsewhere says so.
    assert not re.search(r"advanced 0 runs in [0-9.]+ s\n", err)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_an_interrupted_worker_reports_what_it_did(tmp_path: Path, loop: str) -> None:
    # stderr on a terminal: the worker says there when it goes to sleep until the next timer.
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "run", "nap", "--until-done", "--loop", loop],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    os.close(slave)
    terminal = b""
    try:
        deadline = time.monotonic() + 30
        while b"; next invocation at 20" not in terminal:
            assert proc.poll() is None, (proc.communicate(), terminal)
            assert time.monotonic() < deadline, f"the worker never slept: {terminal!r}"
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                terminal += os.read(master, 4096)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the script is gone
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert b"1/1 runs done, 0 failed" in terminal
    assert proc.returncode == 130
    assert terminal.endswith(b"\r\x1b[Kerror: interrupted\r\n")
    assert "\t  workflow: nap\n\t  run_id: " in out
    assert "\t  waiting for: time 20" in out
    assert "total: 1 paused\n" in out
