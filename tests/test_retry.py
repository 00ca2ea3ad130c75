"""Retried side effects and timeouts: attempts, backoff, short and durable waits, replay."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncflow
from asyncflow import Context, Retry
from asyncflow._record import RunRecord
from asyncflow.testing import MockClock

pytestmark = pytest.mark.anyio

MakeFlow = Callable[..., asyncflow.Flow]


class Flaky(Exception):
    pass


def test_retry_defaults_and_frozen() -> None:
    retry = Retry()
    assert (retry.attempts, retry.initial, retry.backoff, retry.max_delay) == (5, 1.0, 2.0, 60.0)
    assert retry.on == (Exception,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        retry.attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 2.5}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"initial": -1}, "initial"),
        ({"initial": math.nan}, "initial"),
        ({"initial": "1"}, "initial"),
        ({"backoff": 0.5}, "backoff"),
        ({"max_delay": math.inf}, "max_delay"),
        ({"jitter": 1.5}, "jitter"),
        ({"durable_after": -0.1}, "durable_after"),
        ({"on": ()}, "on"),
        ({"on": (KeyboardInterrupt,)}, "on"),
        ({"on": "ValueError"}, "on"),
    ],
)
def test_nonsense_retry_values_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(asyncflow.ConfigError, match=match):
        Retry(**kwargs)


def test_sideeffect_settings_are_checked_where_declared() -> None:
    flow = asyncflow.setup("memory:")

    async def fx(c: Context) -> None:
        pass

    with pytest.raises(asyncflow.ConfigError, match=r"asyncflow\.Retry"):
        flow.sideeffect(retry=3)(fx)  # type: ignore[arg-type]
    for bad in (0, -1, math.nan, "10", True):
        with pytest.raises(asyncflow.ConfigError, match="timeout"):
            flow.sideeffect(timeout=bad)(fx)  # type: ignore[arg-type]
    assert Retry(durable_after=math.inf).durable_after == math.inf


def test_the_schedule_backs_off_caps_and_jitters_within_bounds() -> None:
    retry = Retry(initial=1, backoff=3, max_delay=20, jitter=0.5)
    bases = [1, 3, 9, 20, 20]
    delays = [retry.delay(n, "run/seed") for n in range(1, 6)]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.5 <= delay <= base
    assert delays == [retry.delay(n, "run/seed") for n in range(1, 6)], "a replay draws the same"
    assert delays != [retry.delay(n, "other/seed") for n in range(1, 6)], "runs draw apart"
    exact = Retry(initial=1, backoff=3, max_delay=20, jitter=0)
    assert [exact.delay(n, "s") for n in range(1, 6)] == bases
    assert Retry(attempts=10_000, backoff=10, jitter=0).delay(9_999, "s") == 60


async def test_failed_attempts_are_retried_after_backing_off(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    flow = make_flow()
    times: list[float] = []
    seen: list[Any] = []

    @flow.sideeffect(retry=Retry(attempts=5, initial=1, backoff=2, jitter=0))
    async def fetch(c: Context) -> str:
        times.append(clock.now())
        if len(times) < 3:
            raise Flaky(f"try {len(times)}")
        return "fetched"

    @flow.workflow()
    async def wf(c: Context) -> None:
        seen.append(await fetch(c))
        await c.pause_once()
        seen.append(await fetch(c))

    [result] = await flow.run("wf")
    assert result.status == "paused"
    assert [t - times[0] for t in times] == [0, 1, 3], "waited 1 s then 2 s, on the flow's clock"
    [result] = await flow.run()
    assert result.status == "succeeded"
    assert len(times) == 4, "the replay did not retry again; the second call succeeded at once"
    assert seen == ["fetched", "fetched", "fetched"]
    steps = (await flow.get_run(result.run_id)).steps
    assert steps[0].attempts == 3
    assert steps[0].value == "fetched"


async def test_waits_follow_the_jittered_schedule(make_flow: MakeFlow, clock: MockClock) -> None:
    flow = make_flow()
    times: list[float] = []
    policy = Retry(attempts=6, initial=1, backoff=3, max_delay=20, jitter=0.5, durable_after=60)

    @flow.sideeffect(retry=policy)
    async def fetch(c: Context) -> None:
        times.append(clock.now())
        raise Flaky("down")

    @flow.workflow()
    async def wf(c: Context) -> None:
        await fetch(c)

    [result] = await flow.run("wf")
    assert result.status == "failed"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    bases = [1, 3, 9, 20, 20]
    assert len(gaps) == len(bases)
    for gap, base in zip(gaps, bases, strict=True):
        assert base * 0.5 <= gap <= base
    assert gaps != bases, "jitter shortened the waits"


async def test_exhausted_attempts_raise_sideeffect_error_then_replay_it(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()
    calls: list[int] = []
    errors: list[asyncflow.SideEffectError] = []

    @flow.sideeffect(retry=Retry(attempts=3, initial=0.5, jitter=0))
    async def charge(c: Context) -> None:
        calls.append(1)
        raise Flaky(f"declined {len(calls)}")

    @flow.workflow()
    async def wf(c: Context) -> str:
        try:
            await charge(c)
        except asyncflow.SideEffectError as exc:
            errors.append(exc)
        await c.pause_once()
        return "handled"

    [result] = await flow.run("wf")
    assert result.status == "paused"
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", "handled")
    assert len(calls) == 3, "three attempts, none on replay"
    first, replayed = errors
    for error in errors:
        assert (error.type_name, error.message, error.attempts) == ("Flaky", "declined 3", 3)
    assert isinstance(first.__cause__, Flaky)
    assert "attempt 3" in str(replayed)


async def test_only_matching_errors_are_retried(make_flow: MakeFlow) -> None:
    flow = make_flow()
    raised: list[type[Exception]] = []
    plan: list[type[Exception]] = []

    @flow.sideeffect(retry=Retry(attempts=5, initial=0.1, on=(ConnectionError, TimeoutError)))
    async def call(c: Context) -> None:
        raised.append(plan[len(raised)])
        raise raised[-1]("x")

    @flow.workflow()
    async def wf(c: Context) -> None:
        await call(c)

    plan[:] = [ValueError]
    [result] = await flow.run("wf")
    assert result.error is not None
    assert "ValueError" in result.error
    assert raised == [ValueError], "not retried"
    raised.clear()
    plan[:] = [ConnectionError, ConnectionRefusedError, KeyError]
    [result] = await flow.run("wf")
    assert raised == [ConnectionError, ConnectionRefusedError, KeyError], "subclasses match"
    assert result.error is not None
    assert "KeyError" in result.error


async def test_a_timeout_fails_the_attempt_and_is_retried(make_flow: MakeFlow) -> None:
    flow = make_flow()
    attempts: list[int] = []

    @flow.sideeffect(retry=Retry(attempts=3, initial=0, jitter=0), timeout=0.02)
    async def slow_then_fast(c: Context) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await anyio.Event().wait()  # hangs: only the timeout ends it
        return "answered"

    @flow.workflow()
    async def wf(c: Context) -> str:
        return await slow_then_fast(c)

    [result] = await flow.run("wf")
    assert (result.status, result.result) == ("succeeded", "answered")
    assert len(attempts) == 2
    [step] = (await flow.get_run(result.run_id)).steps
    assert step.attempts == 2


async def test_a_timeout_without_retry_fails_once(make_flow: MakeFlow) -> None:
    flow = make_flow()
    attempts: list[int] = []

    @flow.sideeffect(retry=Retry(on=(ValueError,)), timeout=0.02)
    async def hang(c: Context) -> None:
        attempts.append(1)
        await anyio.Event().wait()

    @flow.sideeffect(timeout=0.02)
    async def hang_plain(c: Context) -> None:
        await anyio.Event().wait()

    @flow.workflow()
    async def wf(c: Context) -> list[str]:
        messages = []
        for fx in (hang, hang_plain):
            try:
                await fx(c)
            except asyncflow.SideEffectError as exc:
                messages.append(f"{exc.type_name}: {exc.message}")
        return messages

    [result] = await flow.run("wf")
    assert attempts == [1], "on= does not name TimeoutError: no retry"
    assert result.result == [
        "TimeoutError: side effect 'test_a_timeout_without_retry_fails_once.<locals>.hang'"
        " did not finish within 0.02 s",
        "TimeoutError: side effect 'test_a_timeout_without_retry_fails_once.<locals>.hang_plain'"
        " did not finish within 0.02 s",
    ]


async def test_a_long_wait_suspends_the_run_until_the_retry_time(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    flow = make_flow()
    times: list[float] = []

    @flow.sideeffect(retry=Retry(attempts=3, initial=60, jitter=0, durable_after=5))
    async def fetch(c: Context) -> str:
        times.append(clock.now())
        if len(times) == 1:
            raise Flaky("later")
        return "fetched"

    @flow.workflow()
    async def wf(c: Context) -> str:
        return await fetch(c)

    start = clock.now()
    [result] = await flow.run("wf")
    assert result.status == "paused"
    run = await flow.get_run(result.run_id)
    assert run.steps[0].retry_at == start + 60
    assert (run.steps[0].attempts, run.steps[0].error) == (1, "Flaky: later")
    assert await flow.run() == [], "not due: the invocation leaves it alone"
    clock.advance(59.5)
    assert await flow.run() == []
    assert times == [start], "no attempt before the retry time"
    clock.advance(0.5)
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", "fetched")
    assert times == [start, start + 60]


async def test_a_short_remaining_wait_is_slept_on_resume(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    """A run resumed a little before its retry time (its record says when) sleeps the rest."""
    flow = make_flow()
    times: list[float] = []

    @flow.sideeffect(retry=Retry(attempts=2, initial=30, jitter=0, durable_after=5))
    async def fetch(c: Context) -> str:
        times.append(clock.now())
        if len(times) == 1:
            raise Flaky("later")
        return "ok"

    @flow.workflow()
    async def wf(c: Context) -> str:
        return await fetch(c)

    start = clock.now()
    [result] = await flow.run("wf")
    clock.advance(27)  # 3 s left: at most durable_after, slept in the invocation
    # Make the run due now, as an event or another timer of it would.
    async with flow:
        entry = await flow.backend.read(("active", result.run_id))
        assert entry is not None
        record = RunRecord.decode(entry.data, "test")
        record.wake_at = None
        await flow.backend.write(("active", result.run_id), record.encode())
        for name in await flow.backend.list("waits"):  # and its timer, in the wait index
            if name.startswith(result.run_id):
                await flow.backend.delete(("waits", name))
    [result] = await flow.run()
    assert result.result == "ok"
    assert times == [start, start + 30]


async def test_short_waits_sleep_for_real_without_a_mock_clock(make_flow: MakeFlow) -> None:
    flow = make_flow(clock=time.time)
    calls: list[float] = []

    @flow.sideeffect(retry=Retry(attempts=3, initial=0.001, jitter=0))
    async def fetch(c: Context) -> int:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise Flaky("again")
        return len(calls)

    @flow.workflow()
    async def wf(c: Context) -> int:
        return await fetch(c)

    [result] = await flow.run("wf")
    assert result.result == 3
    assert calls[2] - calls[0] >= 0.003 * 0.9


async def test_each_attempt_has_its_own_journal(make_flow: MakeFlow) -> None:
    flow = make_flow()
    inner_calls: list[int] = []
    outer_calls: list[int] = []

    @flow.sideeffect()
    async def token(c: Context) -> int:
        inner_calls.append(1)
        return len(inner_calls)

    @flow.sideeffect(retry=Retry(attempts=3, initial=0.1, jitter=0))
    async def call(c: Context) -> int:
        outer_calls.append(1)
        got = await token(c)
        await c.pause_once()
        if got == 1:
            raise Flaky("stale token")
        return got

    @flow.workflow()
    async def wf(c: Context) -> int:
        return await call(c)

    [result] = await flow.run("wf")
    assert result.status == "paused"
    [result] = await flow.run()
    assert result.status == "paused", "attempt 2 fetched a new token, then paused"
    assert inner_calls == [1, 1]
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", 2)
    assert inner_calls == [1, 1], "attempt 2's token replayed, not fetched again"
    # attempt 1; attempt 1 replayed past its pause, then attempt 2; attempt 2 replayed
    assert len(outer_calls) == 4
    run = await flow.get_run(result.run_id)
    assert [(s.kind, s.branch) for s in run.steps if s.kind == "sideeffect"] == [
        ("sideeffect", None),
        ("sideeffect", "0#1"),
        ("sideeffect", "0#2"),
    ]


def test_wake_at_is_stored_and_checked() -> None:
    record = RunRecord(run_id="r", workflow="w", trigger="t", args=None, created_at=1.0)
    assert RunRecord.decode(record.encode(), "x").wake_at is None
    record.wake_at = 123.5
    assert RunRecord.decode(record.encode(), "x").wake_at == 123.5
    for bad, why in ((b'"soon"', "wake_at"), (b"NaN", "NaN"), (b"true", "wake_at")):
        damaged = record.encode().replace(b'"wake_at":123.5', b'"wake_at":' + bad)
        with pytest.raises(asyncflow.BackendError, match=why):
            RunRecord.decode(damaged, "x")


@pytest.mark.procs
def test_a_failed_attempt_is_stored_before_the_wait_and_survives_kill_9(tmp_path: Any) -> None:
    script = Path(__file__).resolve().parent / "helpers" / "proc_crash_flow.py"
    store, journal = tmp_path / "store", tmp_path / "journal.txt"

    def argv(*extra: str) -> list[str]:
        return [sys.executable, str(script), str(store), str(journal), "fetch_once", *extra]

    def stored_attempts() -> int | None:
        if not store.exists():
            return None
        runs = anyio.run(asyncflow.setup(f"file:{store}").list_runs)
        return runs[0].steps[0].attempts if runs and runs[0].steps else None

    proc = subprocess.Popen(argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while stored_attempts() != 1:  # the attempt failed and the process waits an hour
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the failed attempt was never stored"
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def invoke(*extra: str) -> list[dict[str, Any]]:
        done = subprocess.run(argv(*extra), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    assert invoke() == [], "before the retry time, the run is not due"
    [result] = invoke("7200")
    assert (result["status"], result["result"]) == ("succeeded", "fetched")
    assert journal.read_text().splitlines() == ["attempt", "attempt"]
    assert stored_attempts() == 2, "the count went on from the stored attempt"
