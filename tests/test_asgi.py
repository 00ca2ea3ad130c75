"""The ASGI application (`asyncflow.asgi`): through httpx's ASGITransport (asyncio and trio),
through a real uvicorn server on 127.0.0.1, and mounted in a Starlette application."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
import pytest

import asyncflow
import asyncflow.asgi
from asyncflow import Context

pytestmark = pytest.mark.anyio


class CountingBackend(asyncflow.MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.opened = self.closed = 0

    async def open(self) -> None:
        self.opened += 1

    async def aclose(self) -> None:
        self.closed += 1


def make_flow(backend: asyncflow.Backend | None = None) -> asyncflow.Flow:
    flow = asyncflow.setup(backend or CountingBackend())

    @flow.workflow()
    async def greet(c: Context, args: Any) -> str:
        await c.log("hello")
        return f"hello, {(args or {}).get('name', 'world')}"

    @flow.workflow()
    async def wait(c: Context) -> str:
        await c.pause_once()
        return "waited"

    return flow


def client(app: Any, token: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://flow", headers=headers
    )


async def test_the_routes() -> None:
    flow = make_flow()
    async with client(asyncflow.asgi.app(flow)) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        r = await http.post("/runs", json={"trigger": "greet", "args": {"name": "asgi"}})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        (result,) = r.json()
        assert (result["workflow"], result["status"], result["result"]) == (
            "greet",
            "succeeded",
            "hello, asgi",
        )
        assert result["logs"] == ["hello"]
        r = await http.post("/start", json={"trigger": "wait"})
        (wait_id,) = r.json()["run_ids"]
        assert (await http.get(f"/runs/{wait_id}")).json()["status"] == "pending"
        r = await http.post("/resume")
        assert [(x["run_id"], x["status"]) for x in r.json()] == [(wait_id, "paused")]
        paused = (await http.get("/runs", params={"status": "paused"})).json()
        assert [x["run_id"] for x in paused] == [wait_id]
        assert "steps" not in paused[0]
        both = (await http.get("/runs?status=paused,succeeded")).json()
        assert len(both) == 2
        assert [x["result"] for x in (await http.post("/runs", json={})).json()] == ["waited"]
        shown = (await http.get(f"/runs/{wait_id}")).json()
        assert shown["status"] == "succeeded"
        assert [s["kind"] for s in shown["steps"]] == ["pause"]
        # The same shapes as the CLI's --json.
        assert set(shown) == {
            "workflow", "run_id", "status", "trigger", "args", "created_at", "updated_at",
            "logs", "result", "error", "steps", "wake_at", "wait_event", "traceback",
        }  # fmt: skip


async def test_events_and_idempotency_keys() -> None:
    flow = make_flow()

    @flow.workflow()
    async def approve(c: Context) -> Any:
        return await c.wait_event("approved")

    async with client(asyncflow.asgi.app(flow)) as http:
        [waiting] = (await http.post("/runs", json={"trigger": "approve"})).json()
        assert waiting["status"] == "paused"
        woken = await http.post("/runs", json={"event": "approved", "args": {"by": "ops"}})
        assert woken.status_code == 200
        assert [(r["run_id"], r["result"]) for r in woken.json()] == [
            (waiting["run_id"], {"by": "ops"})
        ]
        first = (await http.post("/start", json={"trigger": "greet", "key": "order-7"})).json()
        again = (await http.post("/runs", json={"trigger": "greet", "key": "order-7"})).json()
        # The key's run exists already: nothing new starts; the stored one is resumed.
        assert [r["run_id"] for r in again] == first["run_ids"]
        greets = (await http.get("/runs")).json()
        assert [r["run_id"] for r in greets if r["workflow"] == "greet"] == first["run_ids"]


async def test_bad_requests() -> None:
    flow = make_flow()
    app = asyncflow.asgi.app(flow, max_body_size=1000)
    async with client(app) as http:
        cases: list[tuple[httpx.Response, int, str]] = [
            (await http.post("/runs", content=b"{nope"), 400, "not valid JSON"),
            (await http.post("/runs", content=b"\xff\xfe"), 400, "not UTF-8"),
            (await http.post("/runs", json="greet"), 400, "not a string"),
            (await http.post("/runs", json={"trigger": "nope"}), 400, "known triggers: 'greet'"),
            (await http.post("/runs", json={"trigger": 3}), 400, "non-empty string"),
            (await http.post("/runs", json={"args": 1}), 400, "without a 'trigger'"),
            (await http.post("/runs", json={"event": "x", "trigger": "greet"}), 400, "not both"),
            (await http.post("/runs", json={"event": 3}), 400, "'event' must be a non-empty"),
            (await http.post("/runs", json={"key": "k"}), 400, "'key' given without"),
            (await http.post("/start", json={"event": "x"}), 400, "emit events with POST /runs"),
            (await http.post("/start", json={}), 400, "needs a 'trigger'"),
            (await http.post("/resume", json={"trigger": "greet"}), 400, "takes no trigger"),
            (await http.get("/runs?status=lost"), 400, "unknown status 'lost'"),
            (await http.get("/runs?sort=1"), 400, "unknown query parameter(s): sort"),
            (await http.get("/runs/nope"), 404, "no run with id 'nope'"),
            (await http.get("/nowhere"), 404, "no such route: /nowhere"),
            (await http.get("/runs/a/b"), 404, "no such route"),
            (await http.delete("/runs"), 405, "use GET or POST"),
            (await http.get("/start"), 405, "use POST"),
            (await http.post("/healthz"), 405, "use GET"),
            (await http.post("/runs", json={"trigger": "greet", "args": "x" * 1000}), 413, ""),
        ]
        for response, status, message in cases:
            assert response.status_code == status, response.text
            assert message in response.json()["error"]
        assert (await http.delete("/runs")).headers["allow"] == "GET, POST"
        assert await post_in_chunks(app, 20, b" " * 100) == 413
        assert (await http.get("/runs")).json() == []  # nothing was stored


async def post_in_chunks(app: Any, n: int, chunk: bytes) -> int:
    """POST /runs with a body streamed in ``n`` chunks and no content-length, as a server
    passes it; return the status. The app must stop reading once over its limit."""
    chunks = [{"type": "http.request", "body": chunk, "more_body": True}] * n
    chunks.append({"type": "http.request", "body": b"", "more_body": False})
    received = iter(chunks)
    sent: list[Any] = []

    async def receive() -> Any:
        return next(received)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/runs", "headers": []}
    await app(scope, receive, send)
    assert next(received, None) is not None, "read the whole body"
    return int(sent[0]["status"])


async def test_a_client_gone_before_its_body_ends_starts_nothing() -> None:
    flow = make_flow()
    app = asyncflow.asgi.app(flow)
    messages = iter(
        [
            {"type": "http.request", "body": b'{"trigger": "gr', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[Any] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/runs", "headers": []}, receive, send)
    assert sent == []
    assert await flow.list_runs() == []


async def test_the_token() -> None:
    app = asyncflow.asgi.app(make_flow(), token="s3cret")
    async with client(app) as anonymous, client(app, token="s3cret") as known:
        assert (await anonymous.get("/healthz")).status_code == 200
        for response in [
            await anonymous.post("/runs", json={"trigger": "greet"}),
            await anonymous.get("/runs"),
            await anonymous.get("/runs", headers={"authorization": "Bearer s3cre"}),
            await anonymous.get("/runs", headers={"authorization": "Basic s3cret"}),
        ]:
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in response.json()["error"]
        assert (await known.post("/runs", json={"trigger": "greet"})).status_code == 200
        assert len((await known.get("/runs")).json()) == 1


async def test_an_unexpected_failure_is_a_500_with_an_error_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(asyncflow.MemoryBackend):
        async def list(self, namespace: str) -> dict[str, str]:
            raise RuntimeError("disk on fire at /secret/path")

    async with client(asyncflow.asgi.app(make_flow(Broken()))) as http:
        r = await http.post("/runs", json={})
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "error_id"}
    assert "secret" not in r.text
    assert any(body["error_id"] in rec.getMessage() for rec in caplog.records)
    assert "disk on fire" in caplog.text


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[list[str]]:
    """Run ``app``'s ASGI lifespan around the block, as a server would; yield what it sent."""
    to_app, from_server = anyio.create_memory_object_stream[dict[str, Any]](2)
    sent: list[str] = []
    started = anyio.Event()
    done = anyio.Event()

    async def send(message: Any) -> None:
        sent.append(message["type"])
        if message["type"].startswith("lifespan.startup"):
            started.set()

    async def run() -> None:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, from_server.receive, send)
        done.set()

    async with to_app, from_server, anyio.create_task_group() as tg:
        tg.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        await started.wait()
        try:
            yield sent
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            with anyio.fail_after(10):
                await done.wait()


async def test_the_lifespan_keeps_the_backend_open() -> None:
    backend = CountingBackend()
    app = asyncflow.asgi.app(make_flow(backend))
    async with lifespan(app) as sent, client(app) as http:
        assert sent == ["lifespan.startup.complete"]
        for _ in range(3):
            assert (await http.post("/runs", json={"trigger": "greet"})).status_code == 200
        assert (await http.get("/runs")).status_code == 200
        assert (backend.opened, backend.closed) == (1, 0)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert (backend.opened, backend.closed) == (1, 1)


async def test_a_failing_startup_is_reported() -> None:
    class Unreachable(asyncflow.MemoryBackend):
        async def open(self) -> None:
            raise asyncflow.BackendError("bucket unreachable")

    app = asyncflow.asgi.app(make_flow(Unreachable()))
    to_app, from_server = anyio.create_memory_object_stream[dict[str, Any]](2)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async with to_app, from_server:
        await to_app.send({"type": "lifespan.startup"})
        await app({"type": "lifespan"}, from_server.receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": "bucket unreachable"}]


async def test_resume_every_advances_due_runs_in_the_background() -> None:
    flow = make_flow()
    app = asyncflow.asgi.app(flow, resume_every=0.01)
    async with lifespan(app), client(app) as http:
        (run_id,) = (await http.post("/start", json={"trigger": "wait"})).json()["run_ids"]
        with anyio.fail_after(10):
            # What a client sees is the stored status, so poll it (with the deadline above).
            while (await flow.get_run(run_id)).status != "succeeded":  # noqa: ASYNC110
                await anyio.sleep(0.01)


def test_bad_settings_are_refused() -> None:
    flow = make_flow()
    for bad in (0, -1, True, "1"):
        with pytest.raises(asyncflow.ConfigError, match="resume_every"):
            asyncflow.asgi.app(flow, resume_every=bad)  # type: ignore[arg-type]


# -- concurrency, over a real server and in an app ----------------------------------------------


def barrier_flow(n: int, backend: str | asyncflow.Backend) -> asyncflow.Flow:
    """A flow whose `meet` runs wait inside a side effect until ``n`` of them are running at
    once: requests that blocked one another would never get there (the barrier times out)."""
    flow = asyncflow.setup(backend)
    barrier = threading.Barrier(n, timeout=20)

    @flow.sideeffect()
    async def gather(c: Context) -> int:
        return await anyio.to_thread.run_sync(barrier.wait)

    @flow.workflow()
    async def meet(c: Context, args: Any) -> Any:
        await gather(c)
        return args

    return flow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yield its base URL once ready."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as http, anyio.from_thread.start_blocking_portal() as portal:
            deadline = portal.call(anyio.current_time) + 20
            while True:
                try:
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert thread.is_alive(), "uvicorn stopped"
                assert portal.call(anyio.current_time) < deadline, "uvicorn did not start"
                portal.call(anyio.sleep, 0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(20)


async def test_concurrent_requests_to_a_real_server(tmp_path: Any) -> None:
    n = 12
    flow = barrier_flow(n, f"file:{tmp_path / 'store'}")
    with uvicorn_server(asyncflow.asgi.app(flow, token="t")) as url:
        headers = {"authorization": "Bearer t"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            responses: list[httpx.Response] = []

            async def trigger(i: int) -> None:
                responses.append(await http.post("/runs", json={"trigger": "meet", "args": i}))

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(trigger, i)
            assert all(r.status_code == 200 for r in responses)
            # Each request reports its own run, each run ran once.
            results = sorted(r.json()[0]["result"] for r in responses)
            assert results == list(range(n))
            runs = (await http.get("/runs", params={"status": "succeeded"})).json()
            assert sorted(r["result"] for r in runs) == list(range(n))


async def test_mounted_in_starlette_with_the_flow_in_its_lifespan() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    n = 6
    backend = CountingBackend()
    flow = barrier_flow(n, backend)

    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[None]:
        async with flow:
            yield

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    web = Starlette(
        routes=[Route("/", home), Mount("/flow", app=asyncflow.asgi.app(flow))],
        lifespan=app_lifespan,
    )
    async with lifespan(web), client(web) as http:
        assert (await http.get("/")).text == "home"
        assert (await http.get("/flow/healthz")).json() == {"status": "ok"}
        statuses: list[int] = []

        async def trigger(i: int) -> None:
            r = await http.post("/flow/runs", json={"trigger": "meet", "args": i})
            statuses.append(r.status_code)

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(trigger, i)
        assert statuses == [200] * n
        listed = (await http.get("/flow/runs")).json()
        assert sorted(r["result"] for r in listed) == list(range(n))
        assert (await http.get("/flow/nowhere")).status_code == 404
        assert (backend.opened, backend.closed) == (1, 0)
    assert (backend.opened, backend.closed) == (1, 1)


def test_json_bodies_are_utf8() -> None:
    # (Sync on purpose: a plain check of the encoding, no loop needed.)
    from asyncflow._http import Response

    assert json.loads(Response(200, {"名前": "レモン"}).encode().decode("utf-8")) == {
        "名前": "レモン"
    }


async def test_a_run_that_finishes_while_it_is_looked_up_is_found() -> None:
    """GET /runs/{id} racing the move of a finishing run from active to finished (write to
    finished, then delete from active) must not answer 404."""

    class MovesDuringLookup(CountingBackend):
        moved = False

        async def read(self, key: asyncflow.Key) -> asyncflow.Entry | None:
            entry = await super().read(key)
            if key[0] == "finished" and not self.moved:
                # The run finishes right after the lookup missed it in finished.
                self.moved = True
                active = await super().read(("active", key[1]))
                assert active is not None
                await self.write(key, active.data)
                await self.delete(("active", key[1]))
            return entry

    backend = MovesDuringLookup()
    flow = make_flow(backend)
    (run_id,) = await flow.start("greet")
    async with client(asyncflow.asgi.app(flow)) as http:
        r = await http.get(f"/runs/{run_id}")
    assert backend.moved
    assert r.status_code == 200, r.text
    assert r.json()["run_id"] == run_id
