"""`asyncflow.asgi.lifespan`: what a host application (Starlette, FastAPI) that mounts
`asyncflow.asgi.app` enters so that the backend stays open and `resume_every` resumes due runs;
a mounted app's own lifespan never runs, and its `resume_every` then says so."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from test_asgi import CountingBackend, client, lifespan, make_flow, uvicorn_server

import asyncflow
import asyncflow.asgi

pytestmark = pytest.mark.anyio


async def until_succeeded(flow: asyncflow.Flow, run_id: str) -> None:
    with anyio.fail_after(10):
        # What a client sees is the stored status, so poll it (with the deadline above).
        while (await flow.get_run(run_id)).status != "succeeded":  # noqa: ASYNC110
            await anyio.sleep(0.01)


def starlette_host(flow: asyncflow.Flow, **lifespan_kwargs: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(
        routes=[Mount("/flow", asyncflow.asgi.app(flow))],
        lifespan=asyncflow.asgi.lifespan(flow, **lifespan_kwargs),
    )


def fastapi_host(flow: asyncflow.Flow, **lifespan_kwargs: Any) -> Any:
    from fastapi import FastAPI

    host = FastAPI(lifespan=asyncflow.asgi.lifespan(flow, **lifespan_kwargs))
    host.mount("/flow", asyncflow.asgi.app(flow))
    return host


@pytest.mark.parametrize("host", [starlette_host, fastapi_host])
async def test_a_host_app_entering_the_lifespan_resumes_due_runs(host: Any) -> None:
    backend = CountingBackend()
    flow = make_flow(backend)
    web = host(flow, resume_every=0.01)
    async with lifespan(web) as sent, client(web) as http:
        assert sent == ["lifespan.startup.complete"]
        r = await http.post("/flow/start", json={"trigger": "wait"})
        (run_id,) = r.json()["run_ids"]
        await until_succeeded(flow, run_id)  # no request resumed it: the lifespan did
        assert (backend.opened, backend.closed) == (1, 0), "open while the host runs"
    assert (backend.opened, backend.closed) == (1, 1)


async def test_the_lifespan_inside_a_hosts_own_lifespan() -> None:
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Mount

    flow = make_flow()
    entered: list[str] = []

    @asynccontextmanager
    async def own(app: Any) -> Any:
        entered.append("own")
        async with asyncflow.asgi.lifespan(flow, resume_every=0.01):
            yield

    web = Starlette(routes=[Mount("/flow", asyncflow.asgi.app(flow))], lifespan=own)
    async with lifespan(web), client(web) as http:
        (run_id,) = (await http.post("/flow/start", json={"trigger": "wait"})).json()["run_ids"]
        await until_succeeded(flow, run_id)
    assert entered == ["own"]


async def test_fastapi_on_a_real_uvicorn_server() -> None:
    flow = make_flow()
    web = fastapi_host(flow, resume_every=0.01)

    @web.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    with uvicorn_server(web) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.post("/flow/start", json={"trigger": "wait"})
            (run_id,) = r.json()["run_ids"]
            with anyio.fail_after(10):
                while (await http.get(f"/flow/runs/{run_id}")).json()["status"] != "succeeded":  # noqa: ASYNC110
                    await anyio.sleep(0.02)


async def test_resume_every_on_a_mounted_app_warns_that_it_cannot_take_effect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    flow = make_flow()
    web = Starlette(routes=[Mount("/flow", asyncflow.asgi.app(flow, resume_every=0.01))])
    with caplog.at_level(logging.WARNING, logger="asyncflow"):
        async with lifespan(web), client(web) as http:
            for _ in range(2):
                assert (await http.get("/flow/runs")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "once"
    assert "asyncflow.asgi.app(resume_every=0.01) resumes nothing" in warnings[0]
    assert "asyncflow.asgi.lifespan(flow, resume_every=0.01)" in warnings[0]


async def test_an_app_whose_own_lifespan_runs_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = asyncflow.asgi.app(make_flow(), resume_every=60)
    with caplog.at_level(logging.WARNING, logger="asyncflow"):
        async with lifespan(app), client(app) as http:
            assert (await http.get("/runs")).status_code == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(asyncflow.ConfigError, match="resume_every"):
        asyncflow.asgi.lifespan(make_flow(), resume_every=0)
