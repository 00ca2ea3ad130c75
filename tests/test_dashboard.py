"""The web dashboard over HTTP (its pages, assets, JSON and actions) on every store and loop,
through httpx's ASGITransport, mounted in Starlette, and through the Lambda handler; and the
step times its timeline draws. (tests/test_dashboard_browser.py drives it in Chromium.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from lambda_events import url
from proc_dashboard_flow import make_flow

import asyncflow
import asyncflow.asgi
import asyncflow.aws_lambda
from asyncflow import Context
from asyncflow.testing import MockClock

if TYPE_CHECKING:
    from conftest import Aws

TOKEN = "s3cret-token"
ORIGIN = "http://flow"


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=ORIGIN, headers=headers
    )


async def login(http: httpx.AsyncClient) -> str:
    """Log in with the form; return the session cookie's value, checking its attributes."""
    wrong = await http.post("/dashboard/login", data={"token": "nope"}, headers={"origin": ORIGIN})
    assert wrong.status_code == 303
    assert wrong.headers["location"] == "../?login=failed"
    assert "set-cookie" not in wrong.headers
    right = await http.post("/dashboard/login", data={"token": TOKEN}, headers={"origin": ORIGIN})
    assert right.status_code == 303
    assert right.headers["location"] == "../"
    cookie = right.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    value = rest.split(";")[0]
    attributes = {a.strip() for a in cookie.split(";")[1:]}
    assert name == "asyncflow_session"
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} <= attributes
    assert TOKEN not in cookie  # the cookie is derived from the token, never the token
    return value


async def exercise(http: httpx.AsyncClient) -> None:
    """Every view and action of the dashboard, as its page asks for them, logged in with the
    cookie (the page's own headers: the CSRF header and its Origin)."""
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'name="token"' in page.text
    assert "app.js" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for asset, kind in [("app.js", "text/javascript"), ("app.css", "text/css")]:
        answer = await http.get(f"/dashboard/assets/{asset}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(kind)
    assert (await http.get("/dashboard/assets/__init__.py")).status_code == 404
    assert (await http.get("/dashboard/api/runs")).status_code == 401
    assert (await http.post("/runs", json={"trigger": "nap"})).status_code == 401

    session = await login(http)
    cookie = {"cookie": f"asyncflow_session={session}"}
    same = {**cookie, "origin": ORIGIN, "x-asyncflow-csrf": "1"}
    page = await http.get("/", headers=cookie)
    assert "dashboard/assets/app.js" in page.text
    assert (
        await http.get("/dashboard/api/runs", headers={"cookie": "asyncflow_session=x"})
    ).status_code == 401

    # A POST the browser makes by itself (another site's form) carries the cookie but not the
    # header a script of the page adds, or names another origin: refused, nothing started.
    forged = await http.post("/runs", json={"trigger": "nap"}, headers=cookie)
    assert forged.status_code == 403
    elsewhere = {**same, "origin": "https://evil.example"}
    assert (
        await http.post("/runs", json={"trigger": "nap"}, headers=elsewhere)
    ).status_code == 403
    runs = (await http.get("/dashboard/api/runs", headers=cookie)).json()
    assert runs["all"] == 0

    # Actions: start and run a trigger with args, record one for later, resume.
    done = (
        await http.post(
            "/runs", json={"trigger": "order", "args": {"items": ["a", "b"]}}, headers=same
        )
    ).json()
    by_workflow = {r["workflow"]: r for r in done}
    assert by_workflow["order"]["status"] == "paused"
    assert by_workflow["notify"]["status"] == "succeeded"
    assert by_workflow["audit"]["status"] == "succeeded"
    order_id = by_workflow["order"]["run_id"]
    (fragile,) = (await http.post("/runs", json={"trigger": "fragile"}, headers=same)).json()
    assert fragile["status"] == "failed"
    (nap_id,) = (await http.post("/start", json={"trigger": "nap"}, headers=same)).json()[
        "run_ids"
    ]
    assert [r["run_id"] for r in (await http.post("/resume", headers=same)).json()] == [nap_id]

    # The runs page: counts, filters, search.
    async def runs_page(query: str) -> dict[str, Any]:
        answer = await http.get(f"/dashboard/api/runs?{query}", headers=cookie)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    everything = await runs_page("")
    assert everything["all"] == everything["total"] == 5
    assert everything["counts"] == {
        "pending": 0,
        "paused": 2,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert everything["waits"] == ["approved"]
    assert everything["workflows"]["audit"] == "state:orders"
    ids = [r["run_id"] for r in everything["runs"]]
    assert ids[0] == nap_id  # newest first
    assert ids[-1] == order_id
    assert {r["run_id"] for r in (await runs_page("status=paused"))["runs"]} == {order_id, nap_id}
    assert [r["run_id"] for r in (await runs_page("status=failed,cancelled"))["runs"]] == [
        fragile["run_id"]
    ]
    assert [r["run_id"] for r in (await runs_page("workflow=order"))["runs"]] == [order_id]
    assert [r["run_id"] for r in (await runs_page("wait=event:approved"))["runs"]] == [order_id]
    assert [r["run_id"] for r in (await runs_page("wait=time"))["runs"]] == [nap_id]
    assert (await runs_page("wait=invocation"))["runs"] == []
    assert [r["run_id"] for r in (await runs_page(f"q={order_id[-8:].upper()}"))["runs"]] == [
        order_id
    ]
    bad = await http.get("/dashboard/api/runs?status=lost", headers=cookie)
    assert bad.status_code == 400
    assert "unknown status 'lost'" in bad.json()["error"]
    assert (await http.get("/dashboard/api/runs?page=0", headers=cookie)).status_code == 400

    # One run: its steps with times, lanes, attempts and deadlines.
    run = (await http.get(f"/runs/{order_id}", headers=cookie)).json()
    steps = run["steps"]
    kinds = [(s["kind"], s["name"], s["branch"]) for s in steps]
    assert ("sideeffect", "charge", None) in kinds
    assert ("sideeffect", "pack", "2.0") in kinds
    assert ("sideeffect", "pack", "2.1") in kinds
    for step in steps:
        assert step["started_at"] is not None, step
        assert run["created_at"] <= step["started_at"] <= run["updated_at"]
    charge = next(s for s in steps if s["name"] == "charge")
    assert charge["attempts"] == 2
    assert charge["value"] == 20
    assert charge["started_at"] <= charge["ended_at"]
    wait = next(s for s in steps if s["kind"] == "wait_event")
    assert wait["done"] is False
    assert wait["ended_at"] is None
    assert wait["deadline"] == pytest.approx(wait["started_at"] + 3600)

    # Events: the history, the graph, the state.
    events = (await http.get("/dashboard/api/events", headers=cookie)).json()
    shipped = next(e for e in events["history"] if e["name"] == "shipped")
    assert shipped["emitted_by"] == {"run_id": order_id, "workflow": "order"}
    assert [r["workflow"] for r in shipped["started"]] == ["notify"]
    assert json.loads(shipped["args"]) == {"items": ["a", "b"]}
    change = next(e for e in events["history"] if e["kind"] == "state")
    assert change["name"] == "orders"
    assert json.loads(change["args"]) == {"old": None, "new": 1}
    assert [r["workflow"] for r in change["started"]] == ["audit"]
    edges = {(e["from"], e["to"], e["kind"]) for e in events["graph"]["edges"]}
    assert {
        ("workflow:order", "event:shipped", "emits"),
        ("event:shipped", "workflow:notify", "starts"),
        ("event:approved", "workflow:order", "wakes"),
        ("workflow:order", "state:orders", "sets"),
        ("state:orders", "workflow:audit", "starts"),
        ("event:order", "workflow:order", "starts"),
    } <= edges
    assert events["state"] == [{"name": "orders", "value": 1}]

    # Emit the event the run waits for: it finishes, and the history says whom it woke.
    woken = (
        await http.post("/runs", json={"event": "approved", "args": "alice"}, headers=same)
    ).json()
    assert [(r["run_id"], r["status"]) for r in woken] == [(order_id, "succeeded")]
    run = (await http.get(f"/runs/{order_id}", headers=cookie)).json()
    wait = next(s for s in run["steps"] if s["kind"] == "wait_event")
    assert wait["done"] is True
    assert wait["started_at"] <= wait["ended_at"] <= run["updated_at"]
    events = (await http.get("/dashboard/api/events", headers=cookie)).json()
    approved = next(e for e in events["history"] if e["name"] == "approved")
    assert approved["woke"] == [order_id]
    assert approved["emitted_by"] is None

    # Cancel and retry.
    cancelled = await http.post(f"/runs/{nap_id}/cancel", headers=same)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await http.post(f"/runs/{nap_id}/cancel", headers=same)
    assert again.status_code == 409
    assert "cancelled already" in again.json()["error"]
    retried = await http.post(f"/runs/{fragile['run_id']}/retry", headers=same)
    assert retried.status_code == 200
    assert [(r["run_id"], r["status"]) for r in retried.json()] == [
        (fragile["run_id"], "succeeded")
    ]
    assert (await http.post(f"/runs/{order_id}/retry", headers=same)).status_code == 409
    assert (await http.post("/runs/nope/cancel", headers=same)).status_code == 404
    assert (await http.get(f"/runs/{nap_id}/cancel", headers=cookie)).status_code == 405
    assert (await runs_page("status=cancelled"))["total"] == 1
    assert (await runs_page("status=succeeded"))["total"] == 4

    # Logging out clears the cookie.
    out = await http.post("/dashboard/logout", headers=same)
    assert out.status_code == 303
    assert "Max-Age=0" in out.headers["set-cookie"]


@pytest.mark.anyio
async def test_every_view_and_action_on_memory_and_file(backend_url: str) -> None:
    flow = make_flow(asyncflow.MemoryBackend() if backend_url == "memory:" else backend_url)
    async with client(asyncflow.asgi.app(flow, token=TOKEN)) as http:
        await exercise(http)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["s3", "dynamodb"])
async def test_every_view_and_action_on_aws_stores(
    kind: str, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    flow = make_flow(aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url())
    app = asyncflow.asgi.app(flow, token=TOKEN)
    async with flow, client(app) as http:
        await exercise(http)


@pytest.mark.anyio
async def test_mounted_in_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    flow = make_flow(asyncflow.MemoryBackend())
    app = Starlette(routes=[Mount("/flow", app=asyncflow.asgi.app(flow, token=TOKEN))])
    async with client(app) as http:
        page = await http.get("/flow/", headers={"authorization": f"Bearer {TOKEN}"})
        assert page.status_code == 200
        # The page names its assets relative to itself: under the mount.
        assert 'src="dashboard/assets/app.js"' in page.text
        assert (await http.get("/flow/dashboard/assets/app.js")).status_code == 200
        answer = await http.post(
            "/flow/dashboard/login", data={"token": TOKEN}, headers={"origin": ORIGIN}
        )
        assert answer.status_code == 303
        assert (
            str(httpx.URL("http://flow/flow/dashboard/login").join(answer.headers["location"]))
            == "http://flow/flow/"
        )
        session = answer.headers["set-cookie"].split(";")[0]
        same = {"cookie": session, "origin": ORIGIN, "x-asyncflow-csrf": "1"}
        (nap,) = (await http.post("/flow/start", json={"trigger": "nap"}, headers=same)).json()[
            "run_ids"
        ]
        listed = (await http.get("/flow/dashboard/api/runs", headers={"cookie": session})).json()
        assert [r["run_id"] for r in listed["runs"]] == [nap]
        cancelled = await http.post(f"/flow/runs/{nap}/cancel", headers=same)
        assert cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_through_the_lambda_handler_of_a_function_url(loop: str) -> None:
    flow = make_flow(asyncflow.MemoryBackend())
    handler = asyncflow.aws_lambda.handler(flow, token=TOKEN, loop=loop)  # type: ignore[arg-type]
    origin = {"origin": "https://abcdefghij.lambda-url.eu-west-1.on.aws"}
    try:
        page = handler(url(method="GET", path="/"))
        assert page["statusCode"] == 200
        assert page["headers"]["content-type"] == "text/html; charset=utf-8"
        assert 'name="token"' in page["body"]
        for asset in ("app.js", "app.css", "login.js"):
            answer = handler(url(method="GET", path=f"/dashboard/assets/{asset}"))
            assert answer["statusCode"] == 200, answer
            assert (
                answer["body"]
                == (Path(asyncflow.__file__).parent / "_dashboard" / asset).read_text()
            )
        login = handler(
            url(
                f"token={TOKEN}",
                path="/dashboard/login",
                headers={**origin, "content-type": "application/x-www-form-urlencoded"},
            )
        )
        # Payload 2.0 answers its cookies in a field of their own, and sends them so.
        assert login["statusCode"] == 303
        assert "set-cookie" not in login["headers"]
        (cookie,) = login["cookies"]
        session = cookie.split(";")[0]
        with_cookie = {**url(method="GET", path="/"), "cookies": [session]}
        assert "dashboard/assets/app.js" in handler(with_cookie)["body"]
        started = handler(
            {
                **url(
                    {"trigger": "nap"}, path="/start", headers={**origin, "x-asyncflow-csrf": "1"}
                ),
                "cookies": [session],
            }
        )
        (nap,) = json.loads(started["body"])["run_ids"]
        runs = handler({**url(method="GET", path="/dashboard/api/runs"), "cookies": [session]})
        assert [r["run_id"] for r in json.loads(runs["body"])["runs"]] == [nap]
        forged = handler({**url(path=f"/runs/{nap}/cancel"), "cookies": [session]})
        assert forged["statusCode"] == 403
        bearer = {"authorization": f"Bearer {TOKEN}"}
        cancelled = handler(url(path=f"/runs/{nap}/cancel", headers=bearer))
        assert json.loads(cancelled["body"])["status"] == "cancelled"
        events = handler(url(method="GET", path="/dashboard/api/events", headers=bearer))
        assert json.loads(events["body"])["history"][0]["name"] == "nap"
    finally:
        handler.close()


@pytest.mark.anyio
async def test_without_a_token_the_page_opens_but_other_sites_cannot_post() -> None:
    flow = make_flow(asyncflow.MemoryBackend())
    async with client(asyncflow.asgi.app(flow)) as http:
        page = await http.get("/")
        assert 'data-auth="open"' in page.text
        assert "app.js" in page.text
        other = {"origin": "https://evil.example"}
        forged = await http.post("/start", json={"trigger": "nap"}, headers=other)
        assert forged.status_code == 403
        assert (await http.get("/dashboard/api/runs")).json()["all"] == 0
        # Clients that are not browsers send no Origin, as before.
        assert (await http.post("/start", json={"trigger": "nap"})).status_code == 200


@pytest.mark.anyio
async def test_runs_are_paged_newest_first() -> None:
    flow = make_flow(asyncflow.MemoryBackend())
    for _ in range(120):
        await flow.start("nap")
    ids = [r.run_id for r in await flow.list_runs()][::-1]
    async with client(asyncflow.asgi.app(flow, token=TOKEN)) as http:
        bearer = {"authorization": f"Bearer {TOKEN}"}

        async def page(n: int, size: int = 50) -> dict[str, Any]:
            answer = await http.get(
                f"/dashboard/api/runs?page={n}&per_page={size}", headers=bearer
            )
            return answer.json()  # type: ignore[no-any-return]

        pages = [await page(n) for n in (1, 2, 3, 4)]
        assert [p["total"] for p in pages] == [120] * 4
        assert [r["run_id"] for p in pages for r in p["runs"]] == ids
        assert [len(p["runs"]) for p in pages] == [50, 50, 20, 0]
        assert (await page(1, 100_000))["per_page"] == 500


@pytest.mark.anyio
async def test_the_run_list_follows_the_store_without_rereading_what_did_not_change() -> None:
    class Counting(asyncflow.MemoryBackend):
        reads = 0

        async def read(self, key: Any) -> Any:
            Counting.reads += 1
            return await super().read(key)

        async def read_many(self, keys: Any) -> Any:
            Counting.reads += len(keys)
            return [await super(Counting, self).read(k) for k in keys]

    flow = make_flow(Counting())
    for _ in range(30):
        await flow.start("nap")
    async with client(asyncflow.asgi.app(flow)) as http:
        assert (await http.get("/dashboard/api/runs")).json()["all"] == 30
        Counting.reads = 0
        assert (await http.get("/dashboard/api/runs")).json()["all"] == 30
        assert Counting.reads == 0
        await flow.run()  # every run now sleeps: each record changed
        Counting.reads = 0
        answer = (await http.get("/dashboard/api/runs?wait=time")).json()
        assert answer["total"] == 30
        assert Counting.reads == 30
        await flow.cancel(answer["runs"][0]["run_id"])
        answer = (await http.get("/dashboard/api/runs?status=cancelled")).json()
        assert answer["total"] == 1
        assert answer["all"] == 30


@pytest.mark.anyio
async def test_a_first_look_at_a_large_store_reads_the_page_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncflow._dashboard as dashboard

    class Counting(asyncflow.MemoryBackend):
        reads = 0

        async def read_many(self, keys: Any) -> Any:
            Counting.reads += len(keys)
            return await super().read_many(keys)

    flow = make_flow(Counting())
    for _ in range(120):
        await flow.start("nap")
    monkeypatch.setattr(dashboard, "_READ_BUDGET", 0.0)  # as if reading took all the time
    async with client(asyncflow.asgi.app(flow)) as http:
        first = (await http.get("/dashboard/api/runs?page=2")).json()
        assert Counting.reads == 50
        assert (first["total"], first["all"], first["unread"]) == (120, 120, 70)
        assert len(first["runs"]) == 50
        assert first["counts"]["pending"] == 50  # partial, and said so by "unread"
        # A filter on what the records hold reads the rest.
        filtered = (await http.get("/dashboard/api/runs?status=pending")).json()
        assert Counting.reads == 120
        assert (filtered["total"], filtered["unread"]) == (120, 0)
        assert filtered["counts"]["pending"] == 120


@pytest.mark.anyio
async def test_steps_record_when_they_start_and_end(clock: MockClock) -> None:
    flow = asyncflow.setup("memory:", clock=clock)

    @flow.sideeffect()
    async def slow(c: Context) -> int:
        clock.advance(5)
        return 1

    @flow.workflow()
    async def timed(c: Context) -> None:
        await c.log("start")
        await slow(c)
        await c.sleep(60)
        await c.wait_event("go", timeout=100)

    t0 = clock()
    (result,) = await flow.run("timed")
    clock.advance(61)
    await flow.run()
    clock.advance(7)
    await flow.emit("go")
    steps = (await flow.get_run(result.run_id)).steps
    times = [(s.kind, s.started_at, s.ended_at, s.deadline) for s in steps]
    assert times == [
        ("log", t0, t0, None),
        ("sideeffect", t0, t0 + 5, None),
        ("sleep", t0 + 5, t0 + 66, t0 + 65),
        ("wait_event", t0 + 66, t0 + 73, t0 + 166),
    ]


@pytest.mark.anyio
async def test_a_step_keeps_its_start_across_invocations(clock: MockClock) -> None:
    flow = asyncflow.setup("memory:", clock=clock)

    @flow.sideeffect()
    async def approve(c: Context) -> str:
        await c.pause_once()  # the side effect spans two invocations
        return "ok"

    @flow.sideeffect(retry=asyncflow.Retry(attempts=2, initial=600, max_delay=600, jitter=0))
    async def flaky(c: Context) -> str:
        if not await c.get_state("fixed", False):
            await c.set_state("fixed", True)
            raise ConnectionError("down")
        return "up"

    @flow.workflow()
    async def slow(c: Context) -> None:
        await approve(c)
        await flaky(c)

    t0 = clock()
    (result,) = await flow.run("slow")
    clock.advance(10)
    await flow.run()  # approve ends; flaky fails and waits 600 s to be retried
    waiting = (await flow.get_run(result.run_id)).steps
    retried = next(s for s in waiting if s.name and s.name.endswith("flaky"))
    assert (retried.started_at, retried.ended_at, retried.deadline) == (t0 + 10, None, t0 + 610)
    assert (retried.attempts, retried.error) == (1, "ConnectionError: down")
    clock.advance(600)
    await flow.run()
    steps = (await flow.get_run(result.run_id)).steps
    outer = [(s.name, s.started_at, s.ended_at) for s in steps if s.branch is None]
    assert [(n.rpartition(".")[2], a, e) for n, a, e in outer if n] == [
        ("approve", t0, t0 + 10),
        ("flaky", t0 + 10, t0 + 610),
    ]


@pytest.mark.anyio
async def test_records_without_step_times_still_load_and_show(tmp_path: Path) -> None:
    flow = make_flow(f"file:{tmp_path}")
    (nap,) = await flow.start("nap")
    await flow.run()
    # A record as asyncflow wrote it before steps had times.
    (path,) = (tmp_path / "active").iterdir()
    raw = json.loads(path.read_text())
    for step in raw["steps"]:
        step.pop("at"), step.pop("end", None)
    path.write_text(json.dumps(raw))
    (step,) = (await flow.get_run(nap)).steps
    assert (step.kind, step.started_at, step.ended_at) == ("sleep", None, None)
    async with client(asyncflow.asgi.app(flow)) as http:
        assert (await http.get(f"/runs/{nap}")).json()["steps"][0]["started_at"] is None
        assert (await http.get("/dashboard/api/runs")).json()["runs"][0]["run_id"] == nap


@pytest.mark.anyio
async def test_a_damaged_record_is_listed_as_such_and_the_others_still_are(
    tmp_path: Path,
) -> None:
    flow = make_flow(f"file:{tmp_path}")
    first, second = [(await flow.start("nap"))[0] for _ in range(2)]
    (tmp_path / "active" / f"{first}.json").write_text("{not json")
    async with client(asyncflow.asgi.app(flow)) as http:
        runs = (await http.get("/dashboard/api/runs")).json()["runs"]
        assert {r["run_id"]: r["status"] for r in runs} == {first: "damaged", second: "pending"}
        damaged = next(r for r in runs if r["run_id"] == first)
        assert str(tmp_path / "active") in damaged["error"]
