"""Trigger kinds: state changes, every invocation, cron schedules (and the cron parser)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

import asyncflow
from asyncflow import Context
from asyncflow._cron import Cron
from asyncflow.testing import MockClock

MakeFlow = Callable[..., asyncflow.Flow]


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.anyio
async def test_a_state_change_starts_its_workflows_with_old_and_new(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def set_mode(c: Context, args: str) -> None:
        await c.set_state("mode", args)

    @flow.workflow(trigger=asyncflow.state_trigger("mode"))
    async def on_mode(c: Context, args: dict[str, Any]) -> None:
        await c.log(f"{args['old']} -> {args['new']}")

    results = await flow.run("set_mode", "away")
    assert [(r.workflow, r.logs) for r in results] == [
        ("set_mode", []),
        ("on_mode", ["None -> away"]),
    ]
    results = await flow.run("set_mode", "away")  # no change: nothing starts
    assert [r.workflow for r in results] == ["set_mode"]
    results = await flow.run("set_mode", "home")
    assert [(r.workflow, r.logs) for r in results] == [
        ("set_mode", []),
        ("on_mode", ["away -> home"]),
    ]
    assert flow.workflows["on_mode"] == "state:mode"
    assert (await flow.get_run(results[1].run_id)).trigger == "state:mode"
    with pytest.raises(asyncflow.UnknownTriggerError):
        await flow.run("mode")  # a state trigger is not an event name


@pytest.mark.anyio
async def test_a_replayed_state_change_starts_nothing_again(make_flow: MakeFlow) -> None:
    def script() -> asyncflow.Flow:
        flow = make_flow()

        @flow.workflow()
        async def toggle(c: Context) -> None:
            await c.set_state("light", "on")
            await c.pause_once()

        @flow.workflow(trigger=asyncflow.state_trigger("light"))
        async def watch(c: Context) -> None:
            pass

        return flow

    assert len(await script().run("toggle")) == 2
    [replayed] = await script().run()
    assert replayed.workflow == "toggle"
    assert len(await script().list_runs()) == 2


@pytest.mark.anyio
async def test_every_trigger_runs_once_per_invocation(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger=asyncflow.every_trigger())
    async def heartbeat(c: Context) -> None:
        await c.log("beat")

    @flow.workflow()
    async def other(c: Context) -> None:
        pass

    assert [r.workflow for r in await flow.run()] == ["heartbeat"]
    assert sorted(r.workflow for r in await flow.run("other")) == ["heartbeat", "other"]
    assert [r.workflow for r in await flow.emit("anything")] == ["heartbeat"]
    assert flow.workflows["heartbeat"] == "every"


@pytest.mark.anyio
async def test_cron_runs_once_for_the_latest_tick_since_the_last_invocation(
    make_flow: MakeFlow,
) -> None:
    clock = MockClock(ts("2026-01-01T12:03:00"))
    flow = make_flow(clock=clock)

    @flow.workflow(trigger=asyncflow.cron_trigger("*/10 * * * *"))
    async def report(c: Context, args: dict[str, str]) -> str:
        return args["tick"]

    assert await flow.run() == [], "the first invocation only notes the time"
    clock.advance(5 * 60)  # 12:08: no tick since 12:03
    assert await flow.run() == []
    clock.advance(3 * 3600)  # 15:08: eighteen ticks passed; one run, for the latest
    [run] = await flow.run()
    assert run.result == "2026-01-01T15:00:00+00:00"
    assert await flow.run() == []
    clock.advance(2 * 60)  # 15:10 exactly
    [run] = await flow.run()
    assert run.result == "2026-01-01T15:10:00+00:00"
    assert flow.workflows["report"] == "cron:*/10 * * * *"


@pytest.mark.parametrize(
    ("expression", "after", "upto", "expected"),
    [
        ("*/10 * * * *", "2026-01-01T12:03", "2026-01-01T12:39:59", "2026-01-01T12:30"),
        ("0 9 * * 1-5", "2026-01-01T00:00", "2026-01-05T08:00", "2026-01-02T09:00"),  # Fri
        ("0 9 * * 1-5", "2026-01-02T09:00", "2026-01-05T08:00", None),  # the weekend
        ("30 8,20 * * *", "2026-03-01T00:00", "2026-03-02T19:00", "2026-03-02T08:30"),
        ("0 0 29 2 *", "2025-01-01T00:00", "2028-12-31T00:00", "2028-02-29T00:00"),
        ("0 0 13 * 5", "2026-01-10T00:00", "2026-01-15T00:00", "2026-01-13T00:00"),  # 13th or Fri
        ("0 0 * * 7", "2026-01-01T00:00", "2026-01-07T00:00", "2026-01-04T00:00"),  # 7 is Sun
        ("5-20/5 3 * * *", "2026-01-01T00:00", "2026-01-01T03:17", "2026-01-01T03:15"),
        ("0 0 30 2 *", "2020-01-01T00:00", "2026-01-01T00:00", None),  # never
    ],
)
def test_cron_latest_tick(expression: str, after: str, upto: str, expected: str | None) -> None:
    tick = Cron(expression).latest(ts(after), ts(upto))
    assert tick == (None if expected is None else ts(expected))


@pytest.mark.parametrize(
    ("expression", "mention"),
    [
        ("* * * *", "4 fields"),
        ("60 * * * *", "minute '60' is outside 0-59"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day of week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "ends before it starts"),
        ("a * * * *", "'a'"),
        ("1,,2 * * * *", "''"),
    ],
)
def test_bad_cron_expressions_are_config_errors(expression: str, mention: str) -> None:
    with pytest.raises(asyncflow.ConfigError, match="cron expression") as info:
        asyncflow.cron_trigger(expression)
    assert mention in str(info.value)


def test_bad_trigger_names_are_config_errors() -> None:
    # Triggers are settings (given before any run executes): ConfigError, checked once.
    for make in (asyncflow.event_trigger, asyncflow.state_trigger):
        with pytest.raises(asyncflow.ConfigError, match="name must be a non-empty string"):
            make("")
    flow = asyncflow.setup("memory:")
    with pytest.raises(
        asyncflow.ConfigError, match="trigger of workflow 'bad' must be a non-empty string or a"
    ):

        @flow.workflow(trigger=3)  # type: ignore[arg-type]
        async def bad(c: Context) -> None:
            pass


@pytest.mark.anyio
async def test_a_state_change_recorded_but_not_delivered_is_delivered_by_the_replay(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def arm(c: Context) -> None:
        await c.set_state("armed", True)
        await c.pause_once()

    @flow.workflow(trigger=asyncflow.state_trigger("armed"))
    async def siren(c: Context, args: dict[str, Any]) -> Any:
        return args

    [parent, started] = await flow.run("arm")
    assert started.result == {"old": None, "new": True}
    async with flow:
        # As if the invocation had died after starting `siren` but before storing "sent".
        key = ("active", parent.run_id)
        entry = await flow.backend.read(key)
        assert entry is not None
        raw = json.loads(entry.data)
        del raw["steps"][0]["sent"]
        await flow.backend.write(key, json.dumps(raw).encode(), if_version=entry.version)
    [again] = await flow.run()
    assert again.run_id == parent.run_id
    assert sorted(r.workflow for r in await flow.list_runs()) == ["arm", "siren"]


@pytest.mark.anyio
async def test_a_damaged_cron_mark_is_reported_and_left_alone(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow(trigger=asyncflow.cron_trigger("* * * * *"))
    async def tick(c: Context) -> None:
        pass

    async with flow:
        await flow.backend.write(("cron", "tick"), b"not json")
    with pytest.raises(asyncflow.BackendError, match="schedule mark of workflow 'tick'"):
        await flow.run()
    async with flow:
        entry = await flow.backend.read(("cron", "tick"))
    assert entry is not None
    assert entry.data == b"not json"
