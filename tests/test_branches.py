"""Parallel branches inside one run: c.gather() and c.map()."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import asyncflow
from asyncflow import Context, Retry
from asyncflow.testing import MockClock

pytestmark = pytest.mark.anyio

MakeFlow = Callable[..., asyncflow.Flow]


async def test_gather_returns_results_in_the_order_given(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.sideeffect()
    async def fetch_a(c: Context) -> str:
        return "a"

    @flow.sideeffect()
    async def fetch(c: Context, name: str) -> str:
        return name

    @flow.workflow()
    async def wf(c: Context) -> list[Any]:
        first = await c.gather(fetch_a, lambda b: fetch(b, "b"))
        second = await c.map(fetch, ["x", "y", "z"])
        empty: list[None] = await c.gather()
        return [first, second, empty]

    [result] = await flow.run("wf")
    assert result.result == [["a", "b"], ["x", "y", "z"], []]


async def test_branches_replay_the_same_whatever_order_they_ran_in(make_flow: MakeFlow) -> None:
    """Invocation 1 runs branch 1 first, invocation 2 branch 0 first: each branch still
    replays its own steps, and nothing executes twice."""
    executed: Counter[str] = Counter()
    leader = [1]  # which branch goes first in this invocation

    def define(flow: asyncflow.Flow) -> None:
        @flow.sideeffect()
        async def work(c: Context, label: str) -> str:
            executed[label] += 1
            return label.upper()

        @flow.workflow()
        async def wf(c: Context) -> list[Any]:
            first_done = anyio.Event()

            async def branch(b: Context, i: int) -> list[str]:
                if i != leader[0]:
                    await first_done.wait()
                got = [await work(b, f"{i}-before")]
                await b.log(f"branch {i}")
                if i == leader[0]:
                    first_done.set()
                await b.pause_once()
                got.append(await work(b, f"{i}-after"))
                return got

            return await c.map(branch, [0, 1])

    flow = make_flow()
    define(flow)
    [result] = await flow.run("wf")
    assert result.status == "paused"
    assert result.logs == ["branch 1", "branch 0"], "recorded as they happened"
    leader[0] = 0
    flow = make_flow()
    define(flow)
    [result] = await flow.run()
    assert (result.status, result.result) == (
        "succeeded",
        [["0-BEFORE", "0-AFTER"], ["1-BEFORE", "1-AFTER"]],
    )
    assert set(executed.values()) == {1}, "each side effect executed once"
    run = await flow.get_run(result.run_id)
    assert [s.branch for s in run.steps if s.kind == "pause"] == ["0.1", "0.0"]


async def test_a_paused_branch_suspends_the_run_once_the_others_settle(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()
    executed: list[str] = []

    @flow.sideeffect()
    async def step(c: Context, label: str) -> str:
        executed.append(label)
        return label

    async def pausing(b: Context) -> str:
        await step(b, "p1")
        await b.pause_once()
        return await step(b, "p2")

    async def busy(b: Context) -> str:
        for i in range(3):
            await step(b, f"b{i}")
        return "busy done"

    @flow.workflow()
    async def wf(c: Context) -> list[str]:
        results = await c.gather(pausing, busy)
        await step(c, "after")
        return results

    [result] = await flow.run("wf")
    assert result.status == "paused"
    assert sorted(executed) == ["b0", "b1", "b2", "p1"], "the other branch ran to its end"
    executed.clear()
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", ["p2", "busy done"])
    assert executed == ["p2", "after"], "only what was left executed"


async def test_a_failing_branch_does_not_cancel_its_siblings(make_flow: MakeFlow) -> None:
    flow = make_flow()
    executed: list[str] = []
    caught: list[Any] = []

    @flow.sideeffect()
    async def fail(c: Context, label: str) -> None:
        executed.append(label)
        raise ValueError(label)

    @flow.sideeffect()
    async def ok(c: Context, label: str) -> str:
        executed.append(label)
        return label

    @flow.workflow()
    async def wf(c: Context) -> list[Any]:
        failed_first = anyio.Event()
        failed_second = anyio.Event()

        async def late_failure(b: Context) -> None:
            await failed_first.wait()
            try:
                await fail(b, "second")
            finally:
                failed_second.set()

        async def early_failure(b: Context) -> None:
            try:
                await fail(b, "first")
            finally:
                failed_first.set()

        async def survivor(b: Context) -> str:
            await failed_second.wait()  # runs on after both failures
            return await ok(b, "survivor")

        try:
            await c.gather(late_failure, early_failure, survivor)
        except asyncflow.SideEffectError as exc:
            caught.append(exc.message)
        mixed = await c.gather(early_failure, survivor, return_exceptions=True)
        await c.pause_once()
        return [type(mixed[0]).__name__, mixed[1]]

    [result] = await flow.run("wf")
    assert caught == ["second"], "the first failure in the order given, not in time"
    assert sorted(executed) == ["first", "first", "second", "survivor", "survivor"]
    executed.clear()
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", ["SideEffectError", "survivor"])
    assert executed == [], "failures and results replayed"
    assert caught == ["second", "second"]


async def test_limit_bounds_the_branches_running_at_once(make_flow: MakeFlow) -> None:
    flow = make_flow()
    running = finished = 0
    peaks: list[int] = []
    expect = [0]  # how many should be running together

    @flow.sideeffect()
    async def work(c: Context, item: int) -> int:
        nonlocal running, finished
        running += 1
        peaks[-1] = max(peaks[-1], running)
        # Hold on until as many as expected run (or all that are left do): a limit that lets
        # more in shows in the peak; one that lets fewer in ends in the deadline.
        with anyio.fail_after(5):
            while running < min(expect[0], 10 - finished):
                await anyio.lowlevel.checkpoint()
        running -= 1
        finished += 1
        return item * 10

    @flow.workflow()
    async def wf(c: Context) -> list[int]:
        nonlocal finished
        peaks.append(0)
        expect[0], finished = 3, 0
        limited = await c.map(work, range(10), limit=3)
        peaks.append(0)
        expect[0], finished = 10, 0
        unlimited = await c.map(work, range(10))
        return limited + unlimited

    [result] = await flow.run("wf")
    assert result.result == [i * 10 for i in range(10)] * 2
    assert peaks == [3, 10]


async def test_a_changed_number_of_branches_is_detected(make_flow: MakeFlow) -> None:
    items = [1, 2]

    def define(flow: asyncflow.Flow) -> None:
        @flow.sideeffect()
        async def work(c: Context, item: int) -> int:
            return item

        @flow.workflow()
        async def wf(c: Context) -> list[int]:
            done = await c.map(work, list(items))
            await c.pause_once()
            return done

    flow = make_flow()
    define(flow)
    [result] = await flow.run("wf")
    before = await flow.get_run(result.run_id)
    items.append(3)
    flow = make_flow()
    define(flow)
    [result] = await flow.run()
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("NonDeterminismError:")
    assert "gather() of 2 branches" in result.error
    assert "gathers 3" in result.error
    assert (await flow.get_run(result.run_id)).steps == before.steps, "record kept as it was"


async def test_a_changed_branch_is_detected_with_its_path(make_flow: MakeFlow) -> None:
    names = ["a", "b"]

    def define(flow: asyncflow.Flow) -> None:
        @flow.sideeffect()
        async def a(c: Context) -> None:
            pass

        @flow.sideeffect()
        async def b(c: Context) -> None:
            pass

        @flow.workflow()
        async def wf(c: Context) -> None:
            async def branch(x: Context) -> None:
                await {"a": a, "b": b}[names[0]](x)
                await x.pause_once()

            await c.log("start")
            await c.gather(branch, branch)

    flow = make_flow()
    define(flow)
    await flow.run("wf")
    names.reverse()
    flow = make_flow()
    define(flow)
    [result] = await flow.run()
    assert result.error is not None
    assert result.error.startswith("NonDeterminismError:")
    assert "step 1 of branch 1.0" in result.error


async def test_nested_branches_state_and_side_effects_replay(make_flow: MakeFlow) -> None:
    flow = make_flow()
    executed: Counter[str] = Counter()

    @flow.sideeffect()
    async def leaf(c: Context, label: str) -> str:
        executed[label] += 1
        return label

    @flow.sideeffect()
    async def outer(c: Context, label: str) -> list[str]:
        executed[f"outer-{label}"] += 1
        # a side effect gathering branches of its own, pausing in one of them
        return await c.gather(lambda x: leaf(x, f"{label}.1"), lambda x: pause_then(x, label))

    async def pause_then(c: Context, label: str) -> str:
        await c.pause_once()
        return await leaf(c, f"{label}.2")

    async def branch(c: Context, label: str) -> Any:
        count = await c.get_state("count", 0)
        await c.set_state(f"seen-{label}", count)
        return [await outer(c, label), await c.get_state(f"seen-{label}")]

    @flow.workflow()
    async def wf(c: Context) -> Any:
        await c.set_state("count", 7)
        return await c.map(branch, ["x", "y"], limit=1)

    [result] = await flow.run("wf")
    assert result.status == "paused"
    [result] = await flow.run()
    assert result.status == "succeeded"
    assert result.result == [[["x.1", "x.2"], 7], [["y.1", "y.2"], 7]]
    # The outer side effects paused inside (in a branch of theirs), so their bodies were
    # entered again; every leaf executed once.
    assert executed == {"outer-x": 2, "outer-y": 2, "x.1": 1, "x.2": 1, "y.1": 1, "y.2": 1}
    assert await flow.get_state("seen-y") == 7


async def test_steps_on_the_parent_context_inside_a_branch_are_refused(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> None:
        async def branch(b: Context) -> None:
            await c.log("wrong context")

        await c.gather(branch, branch)

    [result] = await flow.run("wf")
    assert result.error is not None
    assert result.error.startswith("UsageError:")
    assert "gather" in result.error


async def test_bad_gather_arguments_are_refused(make_flow: MakeFlow) -> None:
    flow = make_flow()
    errors: list[str] = []

    @flow.sideeffect()
    async def fx(c: Context) -> None:
        pass

    @flow.workflow()
    async def wf(c: Context) -> None:
        for call in (
            lambda: c.gather(fx, limit=0),
            lambda: c.map(fx, [], limit=True),  # type: ignore[arg-type]
            lambda: c.gather(fx(c), fx(c)),  # type: ignore[call-overload]
            lambda: c.gather(3),  # type: ignore[call-overload]
        ):
            try:
                await call()
            except asyncflow.UsageError as exc:
                errors.append(str(exc))

    [result] = await flow.run("wf")
    assert result.status == "succeeded"
    assert len(errors) == 4
    assert "positive integer" in errors[0]
    assert "not a call of it" in errors[2]


async def test_a_fatal_error_in_one_branch_fails_the_run(make_flow: MakeFlow) -> None:
    flow = make_flow()

    @flow.workflow()
    async def wf(c: Context) -> str:
        async def quiet(b: Context) -> None:
            await b.log("fine")

        async def misuse(b: Context) -> None:
            await c.log("the workflow's context, from a branch")

        try:  # noqa: SIM105  (written as users write it)
            await c.gather(quiet, misuse, return_exceptions=True)
        except Exception:
            pass  # a user's broad except must not turn this into success
        return "swallowed?"

    [result] = await flow.run("wf")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("UsageError:")


async def test_retries_in_branches_wait_durably_while_a_sibling_resumes(
    make_flow: MakeFlow, clock: MockClock
) -> None:
    """The run is due again at once (a branch paused), but the retried attempt is not: its
    replay before the retry time suspends again without executing it."""
    flow = make_flow()
    attempts: list[float] = []

    @flow.sideeffect(retry=Retry(attempts=2, initial=100, jitter=0, durable_after=10))
    async def flaky(c: Context) -> str:
        attempts.append(clock.now())
        if len(attempts) == 1:
            raise ConnectionError("down")
        return "up"

    async def pauser(b: Context) -> str:
        await b.pause_once()
        return "resumed"

    @flow.workflow()
    async def wf(c: Context) -> list[str]:
        return await c.gather(flaky, pauser)

    start = clock.now()
    [result] = await flow.run("wf")
    assert result.status == "paused"
    [result] = await flow.run()
    assert result.status == "paused", "the pauser went on; the retry still waits"
    assert attempts == [start]
    assert await flow.run() == [], "now the run waits for the retry time only"
    clock.advance(100)
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", ["up", "resumed"])
    assert attempts == [start, start + 100]


def test_show_tags_branch_steps_and_says_when_a_retry_is_due(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = asyncflow.setup(f"file:{tmp_path}", clock=MockClock())

    @flow.sideeffect(retry=Retry(attempts=3, initial=600, durable_after=0))
    async def flaky(c: Context) -> None:
        raise ConnectionError("down")

    @flow.sideeffect()
    async def fine(c: Context) -> int:
        return 1

    @flow.workflow()
    async def wf(c: Context) -> None:
        await c.gather(flaky, fine)

    [result] = anyio.run(flow.run, "wf")
    with pytest.raises(SystemExit) as exit_:
        flow.cli(["show", result.run_id])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    # Numbered as the branch paths count: the gather is step 0, its branches 0.0 and 0.1.
    assert "\n  0      gather of 2 branches\n" in out
    assert "\n  0.0/0  sideeffect " in out
    assert "flaky failed 1 time(s), last with ConnectionError: down; next attempt at" in out
    assert "\n  0.1/0  sideeffect " in out


async def test_a_pause_wins_over_a_failure_until_the_branches_settle(make_flow: MakeFlow) -> None:
    flow = make_flow()
    outcomes: list[str] = []

    @flow.sideeffect()
    async def broken(c: Context) -> None:
        raise ValueError("broken")

    async def pausing(b: Context) -> str:
        await b.pause_once()
        return "resumed"

    @flow.workflow()
    async def wf(c: Context) -> None:
        try:
            await c.gather(broken, pausing)
        except asyncflow.SideEffectError as exc:
            outcomes.append(exc.message)

    [result] = await flow.run("wf")
    assert result.status == "paused"
    assert outcomes == [], "the failure waits for the paused branch"
    [result] = await flow.run()
    assert result.status == "succeeded"
    assert outcomes == ["broken"]


async def test_a_branch_outcome_is_stored_before_a_sibling_starts_its_next_side_effect(
    make_flow: MakeFlow,
) -> None:
    flow = make_flow()
    stored: list[list[Any]] = []

    @flow.sideeffect()
    async def first(c: Context) -> str:
        return "first done"

    @flow.sideeffect()
    async def second(c: Context) -> None:
        run = await flow.get_run(c.run_id)  # what a crash now would leave
        stored.append([s.value for s in run.steps if s.kind == "sideeffect" and s.done])

    @flow.workflow()
    async def wf(c: Context) -> None:
        first_done = anyio.Event()

        async def a(b: Context) -> None:
            await first(b)
            first_done.set()

        async def b(x: Context) -> None:
            await first_done.wait()
            await second(x)

        await c.gather(a, b)

    async with flow:
        [result] = await flow.run("wf")
    assert result.status == "succeeded"
    assert stored == [["first done"]]


async def test_a_branch_that_stops_short_of_its_recorded_steps_is_detected(
    make_flow: MakeFlow,
) -> None:
    steps = [2]

    def define(flow: asyncflow.Flow) -> None:
        @flow.workflow()
        async def wf(c: Context) -> None:
            async def branch(b: Context) -> None:
                for i in range(steps[0]):
                    await b.log(f"line {i}")
                if steps[0]:
                    await b.pause_once()

            await c.gather(branch)

    flow = make_flow()
    define(flow)
    await flow.run("wf")
    steps[0] = 0
    flow = make_flow()
    define(flow)
    [result] = await flow.run()
    assert result.error is not None
    assert result.error.startswith("NonDeterminismError:")
    assert "the branch returned at step 1 of branch 0.0, where log() and 2 more" in result.error


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_interleavings_that_change_every_invocation_replay_the_same(
    make_flow: MakeFlow, seed: int
) -> None:
    """Five branches with nested maps and pauses; each invocation lets the branches' tasks
    take turns in another order (a different number of scheduler turns before each step).
    Whatever the interleaving, every side effect executes once and the result is the same."""
    executed: Counter[str] = Counter()
    turns = random.Random(seed)

    def define(flow: asyncflow.Flow) -> None:
        @flow.sideeffect()
        async def work(c: Context, label: str) -> str:
            for _ in range(turns.randrange(4)):
                await anyio.lowlevel.checkpoint()
            executed[label] += 1
            return label

        async def leaf(c: Context, label: str) -> str:
            for _ in range(turns.randrange(4)):
                await anyio.lowlevel.checkpoint()
            return await work(c, label)

        async def branch(c: Context, i: int) -> list[Any]:
            got: list[Any] = []
            for j in range(3):
                for _ in range(turns.randrange(4)):
                    await anyio.lowlevel.checkpoint()
                got.append(await work(c, f"{i}.{j}"))
                if (i + j) % 2:
                    await c.pause_once()
            got.append(await c.map(leaf, [f"{i}.leaf{k}" for k in range(i % 3)]))
            return got

        @flow.workflow()
        async def wf(c: Context) -> list[Any]:
            return await c.map(branch, range(5), limit=3 if seed == 2 else None)

    statuses = []
    flow = make_flow()
    define(flow)
    [result] = await flow.run("wf")
    while result.status == "paused":
        statuses.append(result.status)
        assert len(statuses) < 10
        flow = make_flow()
        define(flow)
        [result] = await flow.run()
    assert result.status == "succeeded", result.error
    expected = [
        [f"{i}.0", f"{i}.1", f"{i}.2", [f"{i}.leaf{k}" for k in range(i % 3)]] for i in range(5)
    ]
    assert result.result == expected
    assert set(executed.values()) == {1}
    assert len(executed) == 5 * 3 + sum(i % 3 for i in range(5))


@pytest.mark.procs
def test_kill_9_mid_gather_re_executes_only_the_side_effect_in_flight(tmp_path: Path) -> None:
    """Branches 0-2 finish while branch 3 is in a long call; the process dies. Their outcomes
    were stored as they finished, so the next invocation executes only branch 3 again."""
    script = Path(__file__).resolve().parent / "helpers" / "proc_crash_flow.py"
    store, journal = tmp_path / "store", tmp_path / "journal.txt"
    argv = [sys.executable, str(script), str(store), str(journal), "fan"]

    def stored_done() -> int:
        if not store.exists():
            return 0
        runs = anyio.run(asyncflow.setup(f"file:{store}").list_runs)
        return sum(s.kind == "sideeffect" and s.done for r in runs for s in r.steps)

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while stored_done() < 3:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the finished branches were never stored"
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert sorted(journal.read_text().splitlines()) == ["step0", "step1", "step2", "step3"]

    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)
    assert (result["status"], result["result"]) == ("succeeded", [0, 1, 4, 9])
    assert sorted(journal.read_text().splitlines()) == [
        "step0",
        "step1",
        "step2",
        "step3",
        "step3",
    ], "only the side effect in flight ran again"
