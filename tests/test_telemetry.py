"""What the `asyncflow` logger and OpenTelemetry are told: structured records (run id,
workflow, step as `extra` fields), one line per invocation, and spans for invocations, runs
and side effects (checked with the SDK's in-memory exporter); nothing of OpenTelemetry is
imported by asyncflow itself."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

import asyncflow
from asyncflow import Context

pytestmark = pytest.mark.anyio

otel_trace = pytest.importorskip("opentelemetry.trace")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: asyncflow asks the API for it each
    # time, so the test points the API at its own provider instead.
    monkeypatch.setattr(otel_trace, "get_tracer_provider", lambda: _PROVIDER)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def shop() -> asyncflow.Flow:
    flow = asyncflow.setup("memory:")

    @flow.sideeffect()
    async def price(c: Context, item: str) -> int:
        return 100

    @flow.sideeffect()
    async def refuse(c: Context) -> None:
        raise ConnectionError("down")

    @flow.workflow()
    async def buy(c: Context, item: str) -> str:
        await c.log(f"buying {item}")
        await price(c, item)
        await c.pause_once()
        return "bought"

    @flow.workflow()
    async def broken(c: Context) -> None:
        await refuse(c)

    return flow


async def test_spans_for_invocations_runs_and_side_effects(
    spans: InMemorySpanExporter,
) -> None:
    flow = shop()
    async with flow:
        [paused] = await flow.run("buy", "lemon")
        [done] = await flow.run()
        [failed] = await flow.run("broken")
    finished = spans.get_finished_spans()
    invocations = [s for s in finished if s.name == "asyncflow.invocation"]
    runs = [s for s in finished if s.name == "asyncflow.run"]
    effects = [s for s in finished if s.name == "asyncflow.sideeffect"]
    assert len(invocations) == 3
    ran = [(s.attributes["asyncflow.run_id"], s.attributes["asyncflow.status"]) for s in runs]
    assert ran == [
        (paused.run_id, "paused"),
        (done.run_id, "succeeded"),
        (failed.run_id, "failed"),
    ]
    assert all(s.attributes["asyncflow.workflow"] in ("buy", "broken") for s in runs)
    # Each run's span is inside its invocation's; a side effect's inside its run's, and only
    # when it executes (the replay of `price` in the second invocation makes none).
    for run_span, invocation in zip(runs, invocations, strict=True):
        assert run_span.parent is not None
        assert run_span.parent.span_id == invocation.context.span_id
    assert [str(s.attributes["asyncflow.step"]).rsplit(".", 1)[-1] for s in effects] == [
        "price",
        "refuse",
    ]
    assert effects[0].parent is not None
    assert effects[0].parent.span_id == runs[0].context.span_id
    assert effects[1].status.status_code == otel_trace.StatusCode.ERROR
    assert effects[1].events[0].name == "exception"
    assert runs[0].status.status_code == otel_trace.StatusCode.UNSET  # a pause is no error


async def test_log_records_carry_the_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="asyncflow")
    flow = shop()
    async with flow:
        [paused] = await flow.run("buy", "lemon")
        [failed, _] = await flow.run("broken")
    [logged] = [r for r in caplog.records if r.getMessage().endswith("buying lemon")]
    assert (logged.run_id, logged.workflow, logged.step) == (paused.run_id, "buy", "log")  # type: ignore[attr-defined]
    [failure] = [r for r in caplog.records if r.getMessage().startswith("run ")]
    [raised] = [r for r in caplog.records if getattr(r, "step", None) not in (None, "log")]
    assert raised.getMessage().endswith("raised ConnectionError: down (attempt 1)")
    assert (raised.run_id, raised.workflow) == (failed.run_id, "broken")  # type: ignore[attr-defined]
    assert str(raised.step).endswith("refuse")  # type: ignore[attr-defined]
    assert (failure.run_id, failure.workflow) == (failed.run_id, "broken")  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("invocation")]
    assert lines[0].startswith("invocation advanced 1 run (1 paused) in ")
    assert lines[1].startswith("invocation advanced 2 runs (1 failed, 1 succeeded) in ")


async def test_runs_of_undefined_workflows_are_one_warning_per_invocation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = asyncflow.MemoryBackend()
    old = asyncflow.setup(backend)

    @old.workflow()
    async def retired(c: Context) -> None:
        await c.pause_once()

    for _ in range(3):
        await old.start("retired")
    new = asyncflow.setup(backend)

    @new.workflow()
    async def current(c: Context) -> None: ...

    assert await new.run() == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "3 runs of workflows this flow does not define left as they are: 'retired' (3)"
    ]


@pytest.mark.procs
def test_asyncflow_never_imports_opentelemetry() -> None:
    code = (
        "import sys, anyio, asyncflow\n"
        "flow = asyncflow.setup('memory:')\n"
        "@flow.sideeffect()\n"
        "async def one(c): return 1\n"
        "@flow.workflow()\n"
        "async def w(c): return await one(c)\n"
        "anyio.run(flow.run, 'w')\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
