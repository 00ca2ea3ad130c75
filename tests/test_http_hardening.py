"""HTTP hardening (issue 9, point 7): the token before the body, bodies under a time limit,
stalled clients that cannot pile up memory (real sockets against uvicorn in its own process),
and client mistakes that never give 500."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import asyncflow
import asyncflow.asgi
from asyncflow import Context
from asyncflow._record import MAX_DEPTH

SERVER = Path(__file__).resolve().parent / "helpers" / "proc_http_server.py"
AUTH = {"authorization": "Bearer t"}


def _flow() -> asyncflow.Flow:
    flow = asyncflow.setup("memory:")

    @flow.sideeffect()
    async def deep(c: Context) -> Any:
        value: Any = 0
        for _ in range(MAX_DEPTH + 5):
            value = [value]
        return value

    @flow.workflow()
    async def greet(c: Context, args: Any) -> Any:
        return args

    @flow.workflow()
    async def nest(c: Context) -> str:
        try:
            await deep(c)
        except asyncflow.SideEffectError as exc:
            return exc.type_name
        return "stored?"

    return flow


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://flow", headers=AUTH
    )


# -- client mistakes: 400 and 404, never 500 -----------------------------------------------------


@pytest.mark.anyio
async def test_client_mistakes_get_400_or_404_and_the_views_keep_working() -> None:
    app = asyncflow.asgi.app(_flow(), token="t")
    nested = b'{"trigger": "greet", "args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    surrogate = b'"x\\ud800y"'
    async with _client(app) as http:
        s = surrogate
        cases = [
            (await http.post("/runs", content=nested), 400),
            (await http.post("/runs", content=b'{"trigger": "greet", "args": ' + s + b"}"), 400),
            (await http.post("/start", content=b'{"trigger": "greet", "args": ' + s + b"}"), 400),
            (await http.post("/runs", content=b'{"event": ' + s + b"}"), 400),
            (await http.post("/runs", content=b'{"event": "e", "args": ' + s + b"}"), 400),
            (await http.post("/runs", content=b'{"trigger": ' + s + b"}"), 400),
            (await http.post("/runs", content=b'{"trigger": "greet", "key": ' + s + b"}"), 400),
            (await http.post("/runs", content=b'{"trigger": "greet", "args": NaN}'), 400),
            (await http.get("/runs/" + "a" * 10_000), 404),
            (await http.get("/runs/%ED%A0%80"), 404),
        ]
        for i, (response, status) in enumerate(cases):
            assert (i, response.status_code) == (i, status), response.text
            assert "error" in response.json()
        # A value nested deeper than the views can print never reaches the store.
        [result] = (await http.post("/runs", json={"trigger": "nest"})).json()
        assert result["result"] == "SerializationError"
        listed = await http.get("/runs")
        assert listed.status_code == 200
        assert [r["workflow"] for r in listed.json()] == ["nest"], "nothing else was stored"
        assert (await http.get(f"/runs/{result['run_id']}")).status_code == 200


# -- the token before the body, the body under a time limit ---------------------------------------


@pytest.mark.anyio
async def test_the_token_is_checked_before_a_byte_of_the_body_is_read() -> None:
    app = asyncflow.asgi.app(_flow(), token="t")
    received: list[str] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append("receive")
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/runs",
        "headers": [(b"content-length", b"1000000")],
    }
    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert received == []
    assert sent[0]["status"] == 401
    assert (b"connection", b"close") in sent[0]["headers"]


@pytest.mark.anyio
async def test_a_body_that_does_not_arrive_in_time_gets_408() -> None:
    app = asyncflow.asgi.app(_flow(), token="t", body_timeout=0.2)
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"trig', "more_body": True}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    headers = [(b"authorization", b"Bearer t")]
    scope = {"type": "http", "method": "POST", "path": "/runs", "headers": headers}
    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert sent[0]["status"] == 408
    assert await app.flow.list_runs() == []


def test_body_timeout_is_checked() -> None:
    for bad in (0, -1, float("inf"), float("nan"), True, "5"):
        with pytest.raises(asyncflow.ConfigError, match="body_timeout"):
            asyncflow.asgi.app(_flow(), body_timeout=bad)  # type: ignore[arg-type]


# -- real sockets against uvicorn in its own process ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """uvicorn serving tests/helpers/proc_http_server.py's app; yields (port, pid)."""
    pytest.importorskip("uvicorn")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(port), str(tmp_path / "store")],
        env={**os.environ, "ASYNCFLOW_TEST_BODY_TIMEOUT": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def _answer(sock: socket.socket, within: float) -> bytes:
    """What the server answered on ``sock`` before it closed or ``within`` seconds passed."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


@pytest.mark.procs
def test_stalled_clients_without_the_token_cannot_pile_up_memory(
    server: tuple[int, int],
) -> None:
    port, pid = server
    before = _rss_mib(pid)
    n, body = 200, b"x" * 900_000
    head = (
        b"POST /runs HTTP/1.1\r\nhost: flow\r\ncontent-type: application/json\r\n"
        b"content-length: 1000000\r\n\r\n"
    )
    socks = []
    try:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head)
            sock.setblocking(False)
            sent = 0
            deadline = time.monotonic() + 0.05
            while sent < len(body) and time.monotonic() < deadline:
                try:
                    sent += sock.send(body[sent : sent + 65536])
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    break  # answered and closed
            socks.append(sock)  # and stalled: never sends the rest
        time.sleep(0.5)  # (a measurement, not a synchronisation: let the server take it in)
        grown = _rss_mib(pid) - before
        answers = [_answer(sock, 5) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    print(f"server RSS {before:.1f} MiB, +{grown:.1f} MiB with {n} stalled clients")
    answered = [a for a in answers if a.startswith(b"HTTP/1.1 401")]
    assert len(answered) + answers.count(b"") == n, "each answered 401 or closed"
    assert len(answered) >= n // 2
    assert grown < 40, f"the server grew by {grown:.1f} MiB"


@pytest.mark.procs
def test_a_slow_client_with_the_token_gets_408(server: tuple[int, int]) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /runs HTTP/1.1\r\nhost: flow\r\nauthorization: Bearer t\r\n"
            b'content-length: 100\r\n\r\n{"trigger": '
        )
        started = time.monotonic()
        answer = _answer(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 5
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as http:
        assert http.get("/runs").json() == [], "nothing started"
