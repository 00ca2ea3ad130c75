"""One bad run never stops the others; a value that cannot be stored fails one step, not the
invocation; failures keep their traceback (issue 9, points 2 to 5)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import asyncflow
from asyncflow import Context
from asyncflow._record import MAX_DEPTH, MAX_TRACEBACK

pytestmark = pytest.mark.anyio

MakeFlow = Callable[..., asyncflow.Flow]
ACTIVE = "active"


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def _counting_flow(make_flow: MakeFlow, calls: list[str]) -> asyncflow.Flow:
    """``wf`` runs a side effect, pauses once, runs another: every due run advances."""
    flow = make_flow()

    @flow.sideeffect()
    async def act(c: Context, what: str) -> str:
        calls.append(f"{c.run_id} {what}")
        return what

    @flow.workflow()
    async def wf(c: Context) -> str:
        await act(c, "first")
        await c.pause_once()
        return await act(c, "second")

    return flow


async def _records(flow: asyncflow.Flow) -> dict[str, bytes]:
    backend = flow.backend
    names = await backend.list(ACTIVE)
    entries = await backend.read_many([(ACTIVE, n) for n in names])
    return {n: e.data for n, e in zip(names, entries, strict=True) if e is not None}


# -- 2. isolation ------------------------------------------------------------------------------

DAMAGED = {
    "not json": b"{not json",
    "not utf-8": b"\xff\xfe{}",
    "foreign json": b'{"some": "other tool"}',
    "no fields": b'{"asyncflow": "run", "format": 1}',
    "nested 100,000 levels": b"[" * 100_000 + b"]" * 100_000,
    "NaN": b'{"asyncflow": "run", "format": 1, "args": NaN}',
    "lone surrogate": (
        b'{"asyncflow":"run","format":1,"run_id":"%s","workflow":"wf","trigger":"wf",'
        b'"status":"pending","created_at":1,"updated_at":1,"args":"\\ud800","result":null,'
        b'"error":null,"wake_at":null,"wait_event":null,"steps":[]}'
    ),
}


async def test_an_emit_reaches_the_waiting_runs_beside_a_damaged_one(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def waiter(c: Context) -> Any:
        return await c.wait_event("go")

    ids = [id_ for _ in range(3) for id_ in await flow.start("waiter")]
    assert [r.status for r in await flow.run()] == ["paused"] * 3
    bad = ids[1]
    await flow.backend.write((ACTIVE, bad), b"{not json")

    results = await flow.emit("go", {"n": 1})
    assert sorted((r.run_id, r.status, r.result) for r in results if r.run_id != bad) == sorted(
        (i, "succeeded", {"n": 1}) for i in (ids[0], ids[2])
    )
    assert (await _records(flow))[bad] == b"{not json", "never overwritten"


@pytest.mark.parametrize("damage", list(DAMAGED))
async def test_a_damaged_record_is_reported_skipped_and_kept_while_the_others_advance(
    make_flow: MakeFlow, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    flow = _counting_flow(make_flow, calls)
    ids = [id_ for _ in range(3) for id_ in await flow.start("wf")]
    assert [r.status for r in await flow.run()] == ["paused"] * 3
    good, bad = [ids[0], ids[2]], ids[1]
    content = DAMAGED[damage].replace(b"%s", bad.encode())
    await flow.backend.write((ACTIVE, bad), content)
    calls.clear()

    with caplog.at_level(logging.ERROR, "asyncflow"):
        results = await flow.run()
    assert [(r.run_id, r.status) for r in results] == [
        (good[0], "succeeded"),
        (good[1], "succeeded"),
        (bad, "damaged"),
    ]
    assert sorted(calls) == sorted(f"{g} second" for g in good)
    location = flow.backend.locate((ACTIVE, bad))
    assert location in str(results[2].error)
    assert bad in caplog.text
    assert location in caplog.text
    assert (await _records(flow))[bad] == content, "never overwritten"

    # Inspection shows it; later invocations report it again and run nothing twice.
    runs = await flow.list_runs()
    assert [(r.run_id, r.status) for r in runs][-1] == (bad, "damaged")
    assert {r.status for r in runs[:-1]} == {"succeeded"}
    assert [r.run_id for r in await flow.list_runs("damaged")] == [bad]
    shown = await flow.get_run(bad)
    assert shown.status == "damaged"
    assert location in str(shown.error)
    calls.clear()
    assert [(r.run_id, r.status) for r in await flow.run()] == [(bad, "damaged")]
    assert calls == []
    results = await flow.run("wf")
    assert [r.status for r in results] == ["paused", "damaged"], "new triggers still start"


async def test_a_copied_record_is_reported_and_its_side_effects_never_run_twice(
    make_flow: MakeFlow,
) -> None:
    calls: list[str] = []
    flow = _counting_flow(make_flow, calls)
    [original] = await flow.run("wf")
    data = (await _records(flow))[original.run_id]
    copy_name = "0" * 20  # sorts first
    await flow.backend.write((ACTIVE, copy_name), data)
    calls.clear()
    results = await flow.run()
    assert [(r.run_id, r.status) for r in results] == [
        (original.run_id, "succeeded"),
        (copy_name, "damaged"),
    ]
    assert original.run_id in str(results[1].error)
    assert calls == [f"{original.run_id} second"], "the copy did not run"
    assert (await _records(flow))[copy_name] == data


async def test_a_directory_in_place_of_a_record_is_reported_and_skipped(tmp_path: Path) -> None:
    # Unreadable as root too (the tests run as root, for whom mode 000 reads fine).
    calls: list[str] = []
    flow = _counting_flow(
        lambda: asyncflow.setup(f"file:{tmp_path}", clock=asyncflow.testing.MockClock()), calls
    )
    [good_id] = await flow.start("wf")
    [bad_id] = await flow.start("wf")
    await flow.run()
    good, bad = await flow.get_run(good_id), await flow.get_run(bad_id)
    path = tmp_path / "active" / f"{bad.run_id}.json"
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("kept")
    results = await flow.run()
    assert [(r.run_id, r.status) for r in results] == [
        (good.run_id, "succeeded"),
        (bad.run_id, "damaged"),
    ]
    assert str(path) in str(results[1].error)
    assert [(r.run_id, r.status) for r in await flow.list_runs()] == [
        (good.run_id, "succeeded"),
        (bad.run_id, "damaged"),
    ]
    assert (path / "inside").read_text() == "kept"


async def test_a_damaged_state_value_fails_the_runs_using_it_and_is_never_overwritten(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def writer(c: Context) -> None:
        await c.set_state("price", 2)

    @flow.workflow()
    async def reader(c: Context) -> Any:
        return await c.get_state("price")

    @flow.workflow()
    async def other(c: Context) -> str:
        await c.set_state("stock", 1)
        return "fine"

    damaged = b'{"asyncflow": "state", "name": "price", "value": '  # cut short
    await flow.backend.write(("state", "price"), damaged)
    location = flow.backend.locate(("state", "price"))
    for trigger in ("writer", "reader"):
        [result] = await flow.run(trigger)
        assert result.status == "failed"
        assert result.error is not None
        assert result.error.startswith("DamagedRecordError")
        assert location in result.error
    [result] = await flow.run("other")
    assert result.status == "succeeded"
    entry = await flow.backend.read(("state", "price"))
    assert entry is not None
    assert entry.data == damaged
    with pytest.raises(asyncflow.DamagedRecordError, match="price"):
        await flow.get_state("price")


# -- 3. values that cannot be stored -------------------------------------------------------------

UNSTORABLE: dict[str, Any] = {
    "lone surrogate": "x\ud800y",
    "NaN": math.nan,
    "infinity": [math.inf],
    "bytes": b"raw",
    "set": {1, 2},
    "datetime": datetime(2024, 1, 1, tzinfo=timezone.utc),
    "too deep": _deep(MAX_DEPTH + 1),
}


@pytest.mark.parametrize("kind", list(UNSTORABLE))
async def test_a_side_effect_value_that_cannot_be_stored_fails_that_step_only(
    make_flow: MakeFlow, kind: str
) -> None:
    calls: list[str] = []
    caught: list[str] = []

    def define(flow: asyncflow.Flow) -> None:
        @flow.sideeffect()
        async def fetch(c: Context) -> Any:
            calls.append("fetch")
            return UNSTORABLE[kind]

        @flow.workflow()
        async def wf(c: Context) -> str:
            try:
                await fetch(c)
            except asyncflow.SideEffectError as exc:
                caught.append(exc.type_name)
            await c.pause_once()
            return "went on"

        @flow.workflow()
        async def bystander(c: Context) -> str:
            await c.pause_once()
            return "unharmed"

    flow = make_flow()
    define(flow)
    [other_id] = await flow.start("bystander")
    [wf_id] = await flow.start("wf")
    assert [r.status for r in await flow.run()] == ["paused", "paused"]
    result = await flow.get_run(wf_id)
    assert caught == ["SerializationError"]
    [step] = [s for s in (await flow.get_run(result.run_id)).steps if s.kind == "sideeffect"]
    assert step.error is not None
    assert step.error.startswith("SerializationError: the value returned by side effect")
    assert "fetch" in step.error

    again = make_flow()  # a new process, in effect
    define(again)
    results = {r.run_id: r for r in await again.run()}
    assert results[result.run_id].result == "went on"
    assert results[other_id].result == "unharmed"
    assert calls == ["fetch"], "replayed from the record, not executed again"
    assert caught == ["SerializationError"] * 2


async def test_a_lone_surrogate_value_does_not_jam_the_store(make_flow: MakeFlow) -> None:
    # The issue's case: every invocation crashed, and re-ran the other runs' side effects.
    calls: list[str] = []
    flow = make_flow()

    @flow.sideeffect()
    async def api(c: Context, n: int) -> str:
        calls.append(f"{n}")
        return json.loads('"x\\ud800y"') if n == 0 else "ok"

    @flow.workflow()
    async def wf(c: Context, n: int) -> str:
        return await api(c, n)

    for n in range(3):
        await flow.start("wf", n)
    results = await flow.run()
    assert sorted(r.status for r in results) == ["failed", "succeeded", "succeeded"]
    assert await flow.run() == []
    assert sorted(calls) == ["0", "1", "2"]
    assert all(r.status != "damaged" for r in await flow.list_runs())


@pytest.mark.parametrize("kind", ["lone surrogate", "too deep", "set"])
async def test_state_event_and_log_values_that_cannot_be_stored_are_refused_where_they_enter(
    make_flow: MakeFlow, kind: str
) -> None:
    flow = make_flow()
    value = UNSTORABLE[kind]
    errors: list[str] = []

    @flow.workflow()
    async def wf(c: Context) -> str:
        for attempt in (
            lambda: c.set_state("price", value),
            lambda: c.event("shipped", value),
            lambda: c.log(value) if isinstance(value, str) else c.log("x\udfff"),
            lambda: c.set_state("x\ud800", 1),
            lambda: c.get_state("x\ud800"),
            lambda: c.event("x\ud800"),
        ):
            try:
                await attempt()
            except asyncflow.SerializationError as exc:
                errors.append(str(exc))
        return "done"

    [result] = await flow.run("wf")
    assert result.status == "succeeded"
    assert len(errors) == 6
    assert "state 'price'" in errors[0]
    assert "event 'shipped'" in errors[1]
    run = await flow.get_run(result.run_id)
    assert run.steps == (), "nothing was recorded, nothing half-written"
    assert await flow.get_state("price") is None


@pytest.mark.parametrize("kind", ["lone surrogate", "too deep", "NaN"])
async def test_run_args_event_args_and_keys_that_cannot_be_stored_change_nothing(
    make_flow: MakeFlow, kind: str
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context, args: Any) -> Any:
        return args

    with pytest.raises(asyncflow.SerializationError, match="the args for trigger 'wf'"):
        await flow.run("wf", UNSTORABLE[kind])
    with pytest.raises(asyncflow.SerializationError):
        await flow.start("wf", UNSTORABLE[kind])
    with pytest.raises(asyncflow.SerializationError, match="event 'wf'"):
        await flow.emit("wf", UNSTORABLE[kind])
    with pytest.raises(asyncflow.SerializationError):
        await flow.emit("x\ud800")
    with pytest.raises(asyncflow.SerializationError, match="idempotency key"):
        await flow.run("wf", 1, key="k\ud800")
    assert await flow.list_runs() == []


# -- 4. retry of a run this script cannot execute ----------------------------------------------


async def test_retry_of_a_run_whose_workflow_is_not_defined_refuses_and_leaves_it(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def boom(c: Context) -> None:
        raise ValueError("kaboom")

    [failed] = await flow.run("boom")
    before = await flow.get_run(failed.run_id)
    other = make_flow()  # another script on the same store

    @other.workflow()
    async def unrelated(c: Context) -> None:
        pass

    with pytest.raises(asyncflow.UsageError, match=r"'boom'.*does not define"):
        await other.retry(failed.run_id)
    assert await other.get_run(failed.run_id) == before
    assert await other.run() == []
    [retried] = await flow.retry(failed.run_id)  # the script that defines it can
    assert retried.status == "failed"


# -- 5. failures keep their traceback ----------------------------------------------------------


async def test_a_failure_keeps_its_traceback_in_results_records_and_the_log(
    make_flow: MakeFlow, caplog: pytest.LogCaptureFixture
) -> None:
    flow = make_flow()

    def divide(n: int) -> float:
        return n / 0

    @flow.workflow()
    async def wf(c: Context) -> float:
        return divide(1)

    with caplog.at_level(logging.ERROR, "asyncflow"):
        [result] = await flow.run("wf")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.traceback is not None
    assert "in divide" in result.traceback
    assert "return n / 0" in result.traceback
    assert "ZeroDivisionError: division by zero" in result.traceback
    assert (await flow.get_run(result.run_id)).traceback == result.traceback
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert result.run_id in record.getMessage()
    assert "in divide" in record.getMessage()


async def test_a_side_effect_failure_keeps_its_traceback_through_replays(
    make_flow: MakeFlow,
) -> None:
    def define(flow: asyncflow.Flow) -> None:
        def connect() -> None:
            raise ConnectionError("refused")

        @flow.sideeffect()
        async def call_api(c: Context) -> None:
            connect()

        @flow.workflow()
        async def wf(c: Context) -> None:
            try:
                await call_api(c)
            except asyncflow.SideEffectError as exc:
                error = exc
            await c.pause_once()
            raise error

    flow = make_flow()
    define(flow)
    [paused] = await flow.run("wf")
    again = make_flow()
    define(again)
    [result] = await again.run()  # the side effect is replayed: its exception is gone
    assert result.status == "failed"
    assert result.traceback is not None
    assert "in connect" in result.traceback
    assert "ConnectionError: refused" in result.traceback
    [step] = (await again.get_run(paused.run_id)).steps[:1]
    assert step.error == "ConnectionError: refused"


async def test_a_traceback_is_bounded(make_flow: MakeFlow) -> None:
    flow = make_flow()

    def recurse(n: int) -> None:
        if n == 0:
            raise ValueError("x" * 100_000)
        recurse(n - 1)

    @flow.workflow()
    async def wf(c: Context) -> None:
        recurse(200)

    [result] = await flow.run("wf")
    assert result.traceback is not None
    assert len(result.traceback) <= MAX_TRACEBACK + 100
    run = await flow.get_run(result.run_id)
    assert run.traceback == result.traceback


async def test_a_record_written_before_tracebacks_were_kept_still_loads(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def boom(c: Context) -> None:
        raise ValueError("kaboom")

    [failed] = await flow.run("boom")
    key = ("finished", failed.run_id)
    entry = await flow.backend.read(key)
    assert entry is not None
    raw = json.loads(entry.data)
    del raw["traceback"]
    await flow.backend.write(key, json.dumps(raw).encode())
    run = await flow.get_run(failed.run_id)
    assert (run.status, run.error, run.traceback) == ("failed", "ValueError: kaboom", None)


async def test_a_record_whose_steps_cannot_be_shown_is_listed_as_damaged(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> str:
        await c.event("e", 1)
        return "done"

    [good] = await flow.run("wf")
    [bad] = await flow.run("wf")
    key = ("finished", bad.run_id)
    entry = await flow.backend.read(key)
    assert entry is not None
    raw = json.loads(entry.data)
    del raw["steps"][0]["change"]["args"]
    await flow.backend.write(key, json.dumps(raw).encode())
    assert [(r.run_id, r.status) for r in await flow.list_runs()] == [
        (good.run_id, "succeeded"),
        (bad.run_id, "damaged"),
    ]
    assert (await flow.get_run(bad.run_id)).status == "damaged"


async def test_an_exception_message_with_a_lone_surrogate_is_stored_escaped(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.sideeffect()
    async def call(c: Context) -> None:
        raise ValueError("bad byte \udcff in the answer")

    @flow.workflow()
    async def wf(c: Context) -> None:
        try:
            await call(c)
        except asyncflow.SideEffectError as exc:
            raise RuntimeError(f"gave up: {exc.message}") from exc

    [result] = await flow.run("wf")
    assert result.status == "failed"
    assert result.error == "RuntimeError: gave up: bad byte \\udcff in the answer"
    run = await flow.get_run(result.run_id)
    assert run.error == result.error
    assert run.traceback is not None
    assert "\\udcff" in run.traceback
    assert all(r.status != "damaged" for r in await flow.list_runs())
