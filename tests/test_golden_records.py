"""The stored format, byte for byte: records of a workflow that uses every primitive.

``tests/golden/records.txt`` was written by asyncflow before the run executor was split out of
``Context`` (issue 13), and every change since must reproduce it exactly: stored runs outlive
the code that wrote them, and a byte that moves is a format change to be made on purpose (then
regenerate with ``ASYNCFLOW_WRITE_GOLDEN=1`` and say so in the changelog).

What is made deterministic for this: the clock (:class:`MockClock`), run and event ids (made
from that clock, with no random bits), ``c.random()`` and ``c.uuid()``. Tracebacks are the one
part normalised: they name the package's own source lines, which move with any edit; their
last line (the exception) is compared.
"""

from __future__ import annotations

import json
import os
import random
import re
import types
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

import asyncflow
from asyncflow import Context, Retry, SideEffectError, WaitTimeout, _record
from asyncflow._cli import main
from asyncflow.testing import MemoryBackend, MockClock

pytestmark = pytest.mark.anyio

GOLDEN = Path(__file__).parent / "golden" / "records.txt"
GOLDEN_VIEWS = Path(__file__).parent / "golden" / "views.txt"
NAMESPACES = ("active", "finished", "state", "waits", "events", "cron")
_TRACEBACK = re.compile(r'"traceback":"((?:[^"\\]|\\.)*)"')


def _normalise(text: str) -> str:
    def last_line(match: re.Match[str]) -> str:
        trace = json.loads(f'"{match.group(1)}"')
        lines = [line for line in trace.splitlines() if line.strip()]
        return '"traceback":' + json.dumps(f"<traceback> {lines[-1]}", ensure_ascii=False)

    return _TRACEBACK.sub(last_line, text)


def _define(flow: asyncflow.Flow, clock: MockClock) -> None:
    failures = {"flaky": 0, "slow_flaky": 0}

    @flow.sideeffect()
    async def fetch(c: Context, item: str) -> dict[str, Any]:
        return {"item": item, "ok": True}

    @flow.sideeffect()
    async def boom(c: Context) -> None:
        raise KeyError("nope")

    @flow.sideeffect(retry=Retry(attempts=4, initial=2.0, jitter=0.5, durable_after=0))
    async def flaky(c: Context) -> str:
        # Fails twice; each wait suspends the run (durable_after=0).
        failures["flaky"] += 1
        await c.log(f"flaky attempt {failures['flaky']}")
        if failures["flaky"] < 3:
            raise ConnectionError(f"try {failures['flaky']}")
        return "flaky done"

    @flow.sideeffect(retry=Retry(attempts=2, initial=1.0, jitter=0, durable_after=60))
    async def hopeless(c: Context) -> None:
        # Waits in the invocation (the MockClock moves itself), then gives up.
        raise ValueError("always")

    @flow.sideeffect(timeout=0.01)
    async def too_slow(c: Context) -> None:
        await anyio.sleep(5)

    @flow.sideeffect()
    async def unstorable(c: Context) -> object:
        return {1, 2}

    @flow.sideeffect()
    async def outer(c: Context, n: int) -> int:
        inner_value = await fetch(c, f"inner{n}")
        await c.pause_once()  # pauses inside a side effect: it spans its inner steps
        return len(inner_value) + n

    async def branch(c: Context, item: str) -> str:
        value = await fetch(c, item)
        await c.log(f"branch {item}")
        if item == "bad":
            await boom(c)
        await c.pause_once()
        return str(value["item"])

    @flow.workflow(trigger="start")
    async def everything(c: Context, args: dict[str, Any]) -> Any:
        await c.log(f'start {args["who"]} ✓ "quoted"')
        count = await c.get_state("count", 0)
        await c.set_state("count", count + 1)
        await c.set_state("watched", {"v": count + 1})  # starts on_watched
        await c.set_state("watched", {"v": count + 1})  # unchanged: no change recorded
        when = await c.now()
        await c.log(f"now {when.isoformat()}")
        await c.log(f"random {await c.random()} uuid {await c.uuid()}")
        await c.pause_once()
        assert (await fetch(c, "a"))["ok"]
        try:
            await boom(c)
        except SideEffectError as exc:
            await c.log(f"caught {exc.type_name}")
        for failing in (hopeless, too_slow, unstorable):
            try:
                await failing(c)
            except SideEffectError as exc:
                await c.log(f"{failing.__name__}: {exc.type_name} after {exc.attempts}")
        await c.log(await flaky(c))
        await c.log(str(await outer(c, 3)))
        await c.sleep(30)
        await c.sleep_until(when + __import__("datetime").timedelta(seconds=400))
        await c.event("ping", {"from": "everything", "n": [1, 2.5, None]})
        got = await c.wait_event("go", timeout=1000)
        await c.log(f"go: {got}")
        try:
            await c.wait_event("never", timeout=50)
        except WaitTimeout:
            await c.log("never came")
        # Branches one at a time (limit=1): the journal's order is the same on every async
        # library, so the bytes are too.
        values = await c.gather(
            lambda b: branch(b, "x"),
            lambda b: branch(b, "bad"),
            limit=1,
            return_exceptions=True,
        )
        await c.log(repr([type(v).__name__ for v in values]))
        mapped = await c.map(branch, ["m1", "m2"], limit=1)
        await c.log(",".join(mapped))
        raise RuntimeError(f"the end: {mapped}")

    @flow.workflow(trigger="ping")
    async def on_ping(c: Context, args: Any) -> Any:
        await c.log(f"pinged {args}")
        return {"echo": args, "list": [1, "two", {"3": None}]}

    @flow.workflow(trigger=asyncflow.state_trigger("watched"))
    async def on_watched(c: Context, args: Any) -> None:
        await c.log(f"watched {args}")


async def _snapshot(backend: MemoryBackend) -> list[str]:
    lines = []
    for ns in NAMESPACES:
        for name in sorted(await backend.list(ns)):
            entry = await backend.read((ns, name))
            assert entry is not None
            lines.append(f"{ns}/{name} {_normalise(entry.data.decode())}")
    return lines


async def _records(monkeypatch: pytest.MonkeyPatch) -> str:
    return (await _scenario(monkeypatch))[0]


async def _scenario(monkeypatch: pytest.MonkeyPatch) -> tuple[str, asyncflow.Flow]:
    clock = MockClock(1_700_000_000.0)
    # Ids from the mock clock, with no random bits: the same on every run of the test.
    monkeypatch.setattr(_record, "_last_id", [0, 0])
    monkeypatch.setattr(_record, "time", types.SimpleNamespace(time_ns=lambda: int(clock() * 1e9)))
    monkeypatch.setattr(_record, "os", types.SimpleNamespace(urandom=lambda n: b"\x5a" * n))
    monkeypatch.setattr(random, "random", random.Random(13).random)
    counter = iter(range(1, 1000))
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(counter) * 7919))
    backend = MemoryBackend()
    flow = asyncflow.setup(backend, clock=clock)
    _define(flow, clock)
    out: list[str] = []

    def report(what: str, results: list[asyncflow.RunResult]) -> None:
        out.append(f"== {what}: " + ", ".join(f"{r.workflow} {r.status}" for r in results))

    report("run start", await flow.run("start", {"who": "golden"}))
    out += await _snapshot(backend)
    for i in range(40):
        clock.advance(60)
        run = await flow.get_run(await _the_run(flow))
        if run.status == "paused" and run.wait_event == "go":
            report(f"emit {i}", await flow.emit("go", {"at": i}))
        else:
            report(f"run {i}", await flow.run())
        out += await _snapshot(backend)
        if run.status in ("succeeded", "failed"):
            break
    return "\n".join(out) + "\n", flow


async def _the_run(flow: asyncflow.Flow) -> str:
    runs = [r for r in await flow.list_runs() if r.workflow == "everything"]
    assert len(runs) == 1
    return runs[0].run_id


async def test_stored_records_are_byte_identical_to_the_golden_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = await _records(monkeypatch)
    if os.environ.get("ASYNCFLOW_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8")
    # Line by line first: a failure names the record that changed.
    for got, want in zip(text.splitlines(), expected.splitlines(), strict=False):
        assert got == want
    assert text == expected
    # What it covers (so that the golden file cannot quietly lose a primitive).
    kinds = set(re.findall(r'"kind":"(\w+)"', expected))
    assert kinds >= {
        "log",
        "get_state",
        "set_state",
        "now",
        "random",
        "uuid",
        "pause",
        "sideeffect",
        "sleep",
        "event",
        "wait_event",
        "gather",
    }
    for field in ('"retry_at"', '"last_error"', '"span"', '"timed_out"', '"branch":"', '"sent"'):
        assert field in expected


def _compare(text: str, golden: Path) -> None:
    if os.environ.get("ASYNCFLOW_WRITE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8")
    for got, want in zip(text.splitlines(), expected.splitlines(), strict=False):
        assert got == want
    assert text == expected


def test_the_views_of_the_golden_runs_are_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What users see of those runs: ``show`` (each step described on one line, at its
    address) and ``show --json`` (the public Run and Step views), as the code before the
    step schema printed them (written by it)."""
    import time

    monkeypatch.setenv("TZ", "UTC")  # `show` prints local times
    time.tzset()
    try:
        _, flow = anyio.run(_scenario, monkeypatch)
        runs = anyio.run(flow.list_runs)
        capsys.readouterr()
        out = []
        for run in runs:
            for argv in (["show", run.run_id], ["show", "--json", run.run_id]):
                assert main(flow, argv) == 0
                printed = capsys.readouterr().out
                if "--json" in argv:
                    data = json.loads(printed)
                    if data["traceback"] is not None:
                        data["traceback"] = data["traceback"].strip().splitlines()[-1]
                    printed = json.dumps(data, ensure_ascii=False, indent=1)
                else:
                    # The traceback's lines name the package's source lines: its last kept.
                    lines = printed.splitlines()
                    if "traceback:" in lines:
                        start = lines.index("traceback:")
                        end = lines.index("steps:")
                        lines[start + 1 : end - 1] = []
                    printed = "\n".join(lines)
                out.append(f"== {' '.join(argv[:-1])}\n{printed}")
    finally:
        monkeypatch.undo()
        time.tzset()
    _compare("\n".join(out) + "\n", GOLDEN_VIEWS)
