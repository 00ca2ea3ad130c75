"""The replay-safe primitives a workflow uses: side effects, logs, state, pauses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import asyncflow
from asyncflow import Context

pytestmark = pytest.mark.anyio

MakeFlow = Callable[..., asyncflow.Flow]


async def test_sideeffect_runs_once_and_replays_recorded_value(make_flow: MakeFlow) -> None:
    calls: list[int] = []
    seen: list[Any] = []

    def define(flow: asyncflow.Flow) -> None:
        @flow.sideeffect()
        async def roll(c: Context) -> int:
            calls.append(1)
            return 4 + len(calls)

        @flow.workflow()
        async def wf(c: Context) -> None:
            seen.append(await roll(c))
            await c.pause_once()
            seen.append(await roll(c))

    first = make_flow()
    define(first)
    [result] = await first.run("wf")
    assert result.status == "paused"
    second = make_flow()  # a new process, in effect
    define(second)
    [result] = await second.run()
    assert result.status == "succeeded"
    assert len(calls) == 2, "each side effect executes once"
    assert seen == [5, 5, 6], "the replay returned the recorded 5, not a new value"


async def test_first_execution_returns_the_round_tripped_value(make_flow: MakeFlow) -> None:
    flow = make_flow()
    seen: list[Any] = []

    @flow.sideeffect()
    async def data(c: Context) -> Any:
        return {"tuple": (1, 2), 3: "int key"}

    @flow.workflow()
    async def wf(c: Context) -> None:
        seen.append(await data(c))
        await c.pause_once()
        seen.append(await data(c))

    await flow.run("wf")
    await flow.run()
    assert seen[0] == {"tuple": [1, 2], "3": "int key"}, "JSON round-tripped on first run too"
    assert seen[0] == seen[1]


async def test_mutating_a_returned_value_does_not_change_the_record(make_flow: MakeFlow) -> None:
    flow = make_flow()
    seen: list[Any] = []

    @flow.sideeffect()
    async def items(c: Context) -> list[int]:
        return [1, 2]

    @flow.workflow()
    async def wf(c: Context) -> None:
        value = await items(c)
        seen.append(list(value))
        value.append(99)
        await c.pause_once()

    await flow.run("wf")
    await flow.run()
    assert seen == [[1, 2], [1, 2]]


async def test_failing_sideeffect_is_recorded_and_replayed(make_flow: MakeFlow) -> None:
    flow = make_flow()
    calls: list[int] = []
    errors: list[asyncflow.SideEffectError] = []

    @flow.sideeffect()
    async def charge(c: Context, amount: int) -> None:
        calls.append(amount)
        raise ValueError(f"card declined for {amount}")

    @flow.workflow()
    async def wf(c: Context) -> str:
        try:
            await charge(c, 10)
        except asyncflow.SideEffectError as exc:
            errors.append(exc)
        await c.pause_once()
        return "done"

    [result] = await flow.run("wf")
    assert result.status == "paused"
    [result] = await flow.run()
    assert result.status == "succeeded"
    assert calls == [10], "a failed side effect is not executed again on replay"
    first, replayed = errors
    for exc in errors:
        assert exc.type_name == "ValueError"
        assert exc.message == "card declined for 10"
        assert exc.name.endswith("charge")
    assert isinstance(first.__cause__, ValueError)
    assert replayed.__cause__ is None


async def test_uncaught_sideeffect_failure_fails_only_its_run(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.sideeffect()
    async def boom(c: Context, n: int) -> None:
        if n == 2:
            raise RuntimeError("boom")

    @flow.workflow(trigger="go")
    async def first(c: Context, args: int) -> int:
        await boom(c, args)
        return args

    @flow.workflow(trigger="go")
    async def second(c: Context, args: int) -> int:
        await boom(c, args + 1)
        return args

    results = await flow.run("go", 1)
    assert [(r.workflow, r.status) for r in results] == [
        ("first", "succeeded"),
        ("second", "failed"),
    ]
    assert results[0].result == 1
    assert results[1].error == (
        "SideEffectError: side effect"
        " 'test_uncaught_sideeffect_failure_fails_only_its_run.<locals>.boom'"
        " raised RuntimeError: boom"
    )
    assert await flow.run() == [], "finished runs are not executed again"


async def test_log_is_not_repeated_on_replay(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> None:
        await c.log("one")
        await c.pause_once()
        await c.log(2)

    [r1] = await flow.run("wf")
    [r2] = await flow.run()
    assert r1.logs == ["one"]
    assert r2.logs == ["one", "2"]


async def test_state_replays_first_read_and_writes_once(make_flow: MakeFlow) -> None:
    flow = make_flow()
    seen: list[Any] = []

    @flow.workflow()
    async def reader(c: Context) -> None:
        seen.append(await c.get_state("price", default=0))
        await c.pause_once()
        await c.pause_once()  # the writer runs while the reader waits here
        seen.append(await c.get_state("price", default=0))

    @flow.workflow()
    async def writer(c: Context, args: int) -> None:
        await c.set_state("price", args)

    await flow.run("reader")
    assert await flow.get_state("price") is None
    assert await flow.get_state("price", 7) == 7
    await flow.run("writer", 100)
    assert await flow.get_state("price") == 100
    await flow.run()
    assert seen == [0, 0, 0, 100], "replays returned the first read; a new read sees 100"


async def test_set_state_is_a_no_op_on_replay(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def setter(c: Context) -> None:
        await c.set_state("owner", "setter")
        await c.pause_once()

    @flow.workflow()
    async def other(c: Context) -> None:
        await c.set_state("owner", "other")

    await flow.run("setter")
    await flow.run("other")  # other sets; setter is replayed in the same invocation
    await flow.run()
    assert await flow.get_state("owner") == "other", "the replayed set_state wrote again"


async def test_unstorable_state_value_raises_and_writes_nothing(make_flow: MakeFlow) -> None:
    flow = make_flow()
    caught: list[Exception] = []

    @flow.workflow()
    async def wf(c: Context) -> None:
        await c.set_state("k", 1)
        try:
            await c.set_state("k", {1, 2})
        except asyncflow.SerializationError as exc:
            caught.append(exc)

    [result] = await flow.run("wf")
    assert result.status == "succeeded"
    assert "'k'" in str(caught[0])
    assert await flow.get_state("k") == 1


async def test_state_names_are_any_text(make_flow: MakeFlow) -> None:
    flow = make_flow()
    names = ["../escape", "a/b", "値段", "", "Price", "price"]

    @flow.workflow()
    async def wf(c: Context) -> None:
        for i, name in enumerate(names):
            await c.set_state(name, i)

    await flow.run("wf")
    assert [await flow.get_state(n) for n in names] == list(range(len(names)))


async def test_pause_once_resumes_on_a_later_invocation_only(make_flow: MakeFlow) -> None:
    flow = make_flow()
    laps: list[int] = []

    @flow.workflow()
    async def loop(c: Context) -> None:
        for i in range(3):
            await c.log(f"lap {i}")
            laps.append(i)
            await c.pause_once()

    statuses = []
    for _ in range(4):
        statuses.append([r.status for r in await flow.run("loop" if not statuses else None)])
    assert statuses == [["paused"], ["paused"], ["paused"], ["succeeded"]]
    assert (await flow.list_runs())[0].logs == ["lap 0", "lap 1", "lap 2"]


async def test_except_exception_cannot_swallow_a_pause(make_flow: MakeFlow) -> None:
    flow = make_flow()
    after: list[str] = []

    @flow.workflow()
    async def wf(c: Context) -> str:
        try:
            await c.pause_once()
        except Exception:
            after.append("swallowed")
        return "done"

    [result] = await flow.run("wf")
    assert result.status == "paused"
    assert after == []
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", "done")


async def test_a_caught_pause_still_pauses(make_flow: MakeFlow) -> None:
    flow = make_flow()
    reached: list[str] = []

    @flow.workflow()
    async def wf(c: Context) -> str:
        with contextlib.suppress(BaseException):
            await c.pause_once()
        reached.append("after")
        await c.log("must not be logged in the pausing invocation")
        return "too early"

    [result] = await flow.run("wf")
    assert result.status == "paused"
    assert result.logs == []
    [result] = await flow.run()
    assert result.status == "succeeded"


async def test_nested_sideeffects_with_pause_inside(make_flow: MakeFlow) -> None:
    flow = make_flow()
    executed: list[str] = []

    @flow.sideeffect()
    async def inner(c: Context, name: str) -> str:
        executed.append(name)
        return name.upper()

    @flow.sideeffect()
    async def outer(c: Context) -> str:
        executed.append("outer")
        a = await inner(c, "a")
        await c.log("between")
        await c.pause_once()
        b = await inner(c, "b")
        return a + b

    @flow.workflow()
    async def wf(c: Context) -> list[str]:
        first = await outer(c)
        await c.pause_once()
        again = await inner(c, "c")
        return [first, again]

    [r] = await flow.run("wf")
    assert r.status == "paused"
    [r] = await flow.run()  # outer is entered again; inner "a" replays
    assert r.status == "paused"
    [r] = await flow.run()  # outer has finished: skipped whole, with its inner steps
    assert (r.status, r.result, r.logs) == ("succeeded", ["AB", "C"], ["between"])
    assert executed == ["outer", "a", "outer", "b", "c"]


async def test_changed_code_under_a_paused_run_fails_loudly(make_flow: MakeFlow) -> None:
    v1 = make_flow()

    @v1.sideeffect()
    async def fetch(c: Context) -> int:
        return 1

    @v1.workflow()
    async def wf(c: Context) -> None:
        await fetch(c)
        await c.pause_once()

    [paused] = await v1.run("wf")
    stored = await v1.get_run(paused.run_id)

    v2 = make_flow()

    @v2.sideeffect()
    async def notify(c: Context) -> int:
        raise AssertionError("must not execute")

    @v2.workflow()  # type: ignore[no-redef]
    async def wf(c: Context) -> None:  # noqa: F811
        try:  # noqa: SIM105  (written as users write it)
            await notify(c)
        except Exception:
            pass  # a broad except must not hide the mismatch

    [result] = await v2.run()
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("NonDeterminismError:")
    assert "fetch" in result.error
    assert "notify" in result.error
    after = await v2.get_run(paused.run_id)
    assert after.steps == stored.steps, "the recorded journal is kept as it was"


async def test_removed_steps_are_detected(make_flow: MakeFlow) -> None:
    v1 = make_flow()

    @v1.workflow()
    async def wf(c: Context) -> None:
        await c.log("a")
        await c.pause_once()

    await v1.run("wf")
    v2 = make_flow()

    @v2.workflow()  # type: ignore[no-redef]
    async def wf(c: Context) -> None:  # noqa: F811
        return None

    [result] = await v2.run()
    assert result.status == "failed"
    assert result.error is not None
    assert "NonDeterminismError" in result.error


async def test_sideeffect_needs_the_context_first(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.sideeffect()
    async def step(c: Context, x: int) -> int:
        return x

    @flow.workflow()
    async def wf(c: Context) -> None:
        await step(1, 2)  # type: ignore[arg-type]

    [result] = await flow.run("wf")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("UsageError:")


def test_sideeffect_definition_errors() -> None:
    flow = asyncflow.setup("memory:")
    with pytest.raises(asyncflow.UsageError, match="async def"):

        @flow.sideeffect()
        def sync(c: Context) -> None: ...

    with pytest.raises(asyncflow.UsageError, match="Context"):

        @flow.sideeffect()
        async def no_context() -> None: ...

    with pytest.raises(asyncflow.UsageError, match="parentheses"):

        @flow.sideeffect  # type: ignore[arg-type]
        async def bare(c: Context) -> None: ...


async def test_context_attributes(make_flow: MakeFlow) -> None:
    flow = make_flow()
    seen: list[tuple[str, str, Any]] = []

    @flow.workflow(trigger="t")
    async def wf(c: Context, args: Any) -> None:
        seen.append((c.run_id, c.workflow, c.args))

    [result] = await flow.run("t", {"k": [1]})
    assert seen == [(result.run_id, "wf", {"k": [1]})]


async def test_steps_awaited_concurrently_are_refused(make_flow: MakeFlow) -> None:
    flow = make_flow()
    executed: list[str] = []

    @flow.sideeffect()
    async def fetch(c: Context, name: str) -> str:
        executed.append(name)
        return name

    @flow.workflow()
    async def wf(c: Context) -> None:
        await fetch(c, "first")
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch, c, "a")
            tg.start_soon(fetch, c, "b")

    [result] = await flow.run("wf")
    assert result.status == "failed"
    assert result.error is not None
    assert "UsageError" in result.error
    assert "one at a time" in result.error
    assert executed == ["first"], "no step ran from the other tasks"


async def test_a_pause_inside_a_task_group_body_pauses(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> str:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)  # a helper task, not a step
            await c.pause_once()
            tg.cancel_scope.cancel()
        return "resumed"

    [result] = await flow.run("wf")
    assert result.status == "paused"
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", "resumed")


async def test_log_lines_go_to_the_asyncflow_logger_once(
    make_flow: MakeFlow, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> None:
        await c.log("hello from the run")
        await c.pause_once()

    caplog.set_level("INFO", logger="asyncflow")
    [run] = await flow.run("wf")
    await flow.run()
    lines = [r for r in caplog.records if r.getMessage().endswith("hello from the run")]
    assert len(lines) == 1, "the replay did not log it again"
    assert run.run_id in lines[0].getMessage()
