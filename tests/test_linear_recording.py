"""Linear recording: on a backend that appends (the file backend), a run's checkpoints add the
steps that changed to its record instead of writing it whole, so a long run's recording costs
in proportion to its length. A paused run's last write of an invocation appends too while the
lines stay short next to the first line (a watched run advanced by one step per invocation
costs no new file per invocation); else the record at rest is one line, as it always was.

What users rely on: the cost per step does not grow with the journal; a record reads back as
the same bytes written whole would; a crash (``kill -9``) mid-append loses and repeats nothing
that was checkpointed; a damaged record is set apart without stopping the others; events
delivered while a run is being recorded are not lost.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_golden_records as golden

import asyncflow
import asyncflow.asgi
from asyncflow import Context
from asyncflow._record import RunRecord
from asyncflow.testing import MockClock, check_backend

pytestmark = pytest.mark.anyio

HELPERS = Path(__file__).resolve().parent / "helpers"


class Counting(asyncflow.FileBackend):
    """The file backend, counting what it is asked to write to each run's record."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.whole: Counter[str] = Counter()  # whole writes of each run
        self.appended: Counter[str] = Counter()  # appends to each run
        self.written: Counter[str] = Counter()  # bytes

    async def write(self, key: Any, data: bytes, **kwargs: Any) -> str:
        if key[0] == "active":
            self.whole[key[1]] += 1
            self.written[key[1]] += len(data)
        return await super().write(key, data, **kwargs)

    async def append(self, key: Any, data: bytes, *, if_version: str) -> str:
        self.appended[key[1]] += 1
        self.written[key[1]] += len(data)
        return await super().append(key, data, if_version=if_version)


def _file(store: Path, run_id: str, namespace: str = "active") -> Path:
    return store / namespace / f"{run_id}.json"


def _recording_flow(backend: asyncflow.Backend | str) -> tuple[asyncflow.Flow, Counter[int]]:
    flow = asyncflow.setup(backend)
    ran: Counter[int] = Counter()

    @flow.sideeffect()
    async def step(c: Context, i: int) -> dict[str, Any]:
        ran[i] += 1
        return {"i": i, "padding": "x" * 50}

    @flow.workflow()
    async def record(c: Context, n: int) -> int:
        for i in range(n):
            await step(c, i)
        await c.pause_once()
        return n

    return flow, ran


async def test_a_long_run_is_recorded_in_proportion_to_its_length(tmp_path: Path) -> None:
    sizes = {}
    for n in (200, 400):
        backend = Counting(tmp_path / str(n))
        flow, ran = _recording_flow(backend)
        [result] = await flow.run("record", n)
        assert result.status == "paused"
        assert ran == Counter(range(n))
        stored = _file(tmp_path / str(n), result.run_id).read_bytes()
        # Written whole twice (created, then its last write of the invocation); every other
        # checkpoint appended what changed.
        assert backend.whole[result.run_id] == 2
        assert backend.appended[result.run_id] >= n - 1
        # Everything written is a few times the record's size, not its size times the steps
        # (each whole checkpoint rewrote the journal: about n / 2 times the size).
        assert backend.written[result.run_id] < 4 * len(stored)
        sizes[n] = backend.written[result.run_id]
    assert sizes[400] < 2.2 * sizes[200]


async def test_the_record_at_rest_is_one_line_as_written_whole(tmp_path: Path) -> None:
    flow, _ran = _recording_flow(f"file:{tmp_path}")
    [result] = await flow.run("record", 50)
    stored = _file(tmp_path, result.run_id).read_bytes()
    assert b"\n" not in stored
    record = RunRecord.decode(stored, "here", result.run_id)
    assert record.encode() == stored
    assert [s["value"]["i"] for s in record.steps if s["kind"] == "sideeffect"] == list(range(50))
    [result] = await flow.run()
    assert result.status == "succeeded"
    assert b"\n" not in _file(tmp_path, result.run_id, "finished").read_bytes()


async def test_records_at_rest_read_as_the_golden_ones_on_the_file_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The golden scenario (tests/test_golden_records.py, every primitive) on the file
    backend, which appends mid-invocation and at rest: after each invocation every record,
    as read and written whole again, is byte for byte the golden file's; every other stored
    byte is the golden file's as it is."""
    backend = Counting(tmp_path / "store")
    monkeypatch.setattr(golden, "MemoryBackend", lambda: backend)
    appended_at_rest: list[str] = []
    normalise = golden._normalise

    def whole(text: str) -> str:
        if "\n" in text:  # a record with appended lines, as it is read
            appended_at_rest.append(text)
            text = RunRecord.decode(text.encode(), "here").encode().decode()
        return normalise(text)

    monkeypatch.setattr(golden, "_normalise", whole)
    text = await golden._records(monkeypatch)
    expected = golden.GOLDEN.read_text(encoding="utf-8")
    for got, want in zip(text.splitlines(), expected.splitlines(), strict=False):
        assert got == want
    assert text == expected
    assert sum(backend.appended.values()) >= 10  # (the appends were in play)
    assert appended_at_rest, "a record at rest had appended lines"


def _watched_flow(backend: asyncflow.Backend | str, clock: MockClock) -> asyncflow.Flow:
    """A watched item: each invocation checks it once (one side effect), then pauses."""
    flow = asyncflow.setup(backend, clock=clock)

    @flow.sideeffect()
    async def check(c: Context, n: int) -> dict[str, Any]:
        return {"n": n, "seen": "x" * 40}

    @flow.workflow()
    async def watch(c: Context) -> None:
        n = 0
        while True:
            await check(c, n)
            n += 1
            await c.pause_once()

    return flow


async def test_a_watched_run_appends_each_invocation_and_is_written_whole_as_lines_grow(
    tmp_path: Path,
) -> None:
    """A paused run advanced by one step per invocation: its invocation's write appends the
    new steps to the file (the same file: no new file per run and invocation) until the lines
    outgrow the record's room, then writes it whole, one line again; read back at any time it
    holds every step, and its updated_at is when it was last advanced."""
    clock = MockClock(1_700_000_000.0)
    backend = Counting(tmp_path)
    flow = _watched_flow(backend, clock)
    [run_id] = await flow.start("watch")
    [first] = await flow.run()
    path = _file(tmp_path, run_id)
    whole = backend.whole[run_id]
    inode = path.stat().st_ino
    appended_invocations = 0
    for n in range(1, 60):
        clock.advance(60)
        [result] = await flow.run()
        assert result.status == "paused"
        data = path.read_bytes()
        if backend.whole[run_id] == whole:
            # Appended: the same file, the steps of this invocation in lines after the first.
            appended_invocations += 1
            assert path.stat().st_ino == inode
            assert data.endswith(b"\n")
            first_line = data.split(b"\n")[0]
            assert len(data) - len(first_line) <= max(len(first_line), 4096)
        else:
            # Written whole once the lines would outgrow the room: one line again.
            assert appended_invocations >= 2, "it appended before it wrote whole"
            assert b"\n" not in data
            whole, inode = backend.whole[run_id], path.stat().st_ino
        run = await flow.get_run(run_id)
        assert run.updated_at == clock()
        assert [s.value["n"] for s in run.steps if s.kind == "sideeffect"] == list(range(n + 1))
        assert RunRecord.decode(data, "here", run_id).updated_at == clock()
    assert appended_invocations >= 40
    assert backend.whole[run_id] >= 4, "the record was written whole as its lines grew"
    assert first.status == "paused"


async def test_a_run_whose_last_line_a_crash_cut_short_is_written_whole_next(
    tmp_path: Path,
) -> None:
    """A watched run's record at rest ends in a line a crash cut short (its invocation died
    mid-append): the next invocation does not append after it, it writes the record whole, as
    of the last complete line."""
    clock = MockClock(1_700_000_000.0)
    backend = Counting(tmp_path)
    flow = _watched_flow(backend, clock)
    [run_id] = await flow.start("watch")
    await flow.run()
    clock.advance(60)
    await flow.run()
    path = _file(tmp_path, run_id)
    stored = path.read_bytes()
    assert stored.count(b"\n") >= 2, "the second invocation appended"
    path.write_bytes(stored + b'[4,{"kind":"sideeffect","na')
    whole = backend.whole[run_id]
    clock.advance(60)
    [result] = await flow.run()
    assert result.status == "paused"
    assert backend.whole[run_id] == whole + 1
    data = path.read_bytes()
    assert b"\n" not in data
    record = RunRecord.decode(data, "here", run_id)
    assert [s["value"]["n"] for s in record.steps if s["kind"] == "sideeffect"] == [0, 1, 2]


async def test_readers_see_the_steps_appended_so_far(tmp_path: Path) -> None:
    """``get_run`` and the dashboard, reading a run while it is recorded, see every step
    checkpointed so far."""
    flow = asyncflow.setup(f"file:{tmp_path}")
    seen: list[tuple[int, int, str]] = []

    @flow.sideeffect()
    async def step(c: Context, i: int) -> int:
        if i in (5, 9):
            run = await flow.get_run(c.run_id)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=asyncflow.asgi.app(flow)), base_url="http://x"
            ) as http:
                [listed] = (await http.get("/dashboard/api/runs")).json()["runs"]
            done = [s.value for s in run.steps if s.kind == "sideeffect" and s.done]
            assert done == list(range(i))
            assert b"\n" in _file(tmp_path, c.run_id).read_bytes()  # (appended lines)
            seen.append((i, listed["steps"], listed["status"]))
        return i

    @flow.workflow()
    async def wf(c: Context) -> None:
        for i in range(10):
            await step(c, i)

    [result] = await flow.run("wf")
    assert result.status == "succeeded"
    assert seen == [(5, 5, "pending"), (9, 9, "pending")]


async def test_a_torn_last_line_is_ignored_and_compacted_by_the_next_invocation(
    tmp_path: Path,
) -> None:
    """A crash cut the last append short: that checkpoint never returned, so the line is left
    out; the next invocation resumes from the checkpoint before it, and writes the record
    whole."""
    flow = asyncflow.setup(f"file:{tmp_path}")
    ran: Counter[int] = Counter()
    snapshot: list[bytes] = []

    @flow.sideeffect()
    async def step(c: Context, i: int) -> int:
        ran[i] += 1
        if i == 6 and not snapshot:
            snapshot.append(_file(tmp_path, c.run_id).read_bytes())  # as a crash would find
        return i * i

    @flow.workflow()
    async def wf(c: Context) -> list[int]:
        return [await step(c, i) for i in range(10)]

    [result] = await flow.run("wf")
    assert result.result == [i * i for i in range(10)]
    [stored] = snapshot
    assert stored.endswith(b"\n")
    assert stored.count(b"\n") >= 2
    # The store as a kill during the append of step 6's outcome leaves it.
    torn = stored + b'[13,{"kind":"sideeffect","name":"step","va'
    (tmp_path / "finished" / f"{result.run_id}.json").rename(_file(tmp_path, result.run_id))
    _file(tmp_path, result.run_id).write_bytes(torn)

    run = await flow.get_run(result.run_id)
    assert [s.value for s in run.steps if s.kind == "sideeffect" and s.done] == [
        i * i for i in range(6)
    ]
    ran.clear()
    [again] = await flow.run()
    assert (again.status, again.result) == ("succeeded", [i * i for i in range(10)])
    assert ran == Counter(range(6, 10)), "only the side effects not checkpointed ran again"
    at_rest = _file(tmp_path, result.run_id, "finished").read_bytes()
    assert b"\n" not in at_rest


async def test_a_damaged_line_sets_the_run_apart_and_the_others_go_on(tmp_path: Path) -> None:
    flow = asyncflow.setup(f"file:{tmp_path}")

    @flow.workflow()
    async def wf(c: Context) -> str:
        await c.log("one")
        await c.pause_once()
        return "done"

    [bad] = await flow.start("wf")
    [good] = await flow.start("wf")
    assert [r.status for r in await flow.run()] == ["paused", "paused"]
    path = _file(tmp_path, bad)
    damaged = path.read_bytes() + b'\nnot json\n[2,{"kind":"log","message":"two"}]\n'
    path.write_bytes(damaged)

    results = {r.run_id: r for r in await flow.run()}
    assert results[good].status == "succeeded"
    assert results[bad].status == "damaged"
    error = results[bad].error or ""
    assert str(path) in error
    assert "line 2" in error
    assert path.read_bytes() == damaged, "a damaged record is left untouched"
    run = await flow.get_run(bad)
    assert run.status == "damaged"
    assert "line 2" in (run.error or "")


async def test_a_replaced_loaded_step_survives_append_and_decode(tmp_path: Path) -> None:
    """A side effect that paused inside finishes in a later invocation: its step, loaded,
    is replaced; the checkpoints after append the replacement, and reading them back (as a
    crash's next invocation would) gives the finished step."""
    flow = asyncflow.setup(f"file:{tmp_path}")
    ran: Counter[str] = Counter()
    snapshot: list[bytes] = []

    @flow.sideeffect()
    async def inner(c: Context, name: str) -> str:
        ran[name] += 1
        if name == "after" and not snapshot:
            snapshot.append(_file(tmp_path, c.run_id).read_bytes())
        return name.upper()

    @flow.sideeffect()
    async def outer(c: Context) -> str:
        ran["outer"] += 1
        await c.pause_once()  # paused inside: finishes in the next invocation
        # (The second one's checkpoint writes the record whole: appends come after it.)
        return await inner(c, "in1") + await inner(c, "in2")

    @flow.workflow()
    async def wf(c: Context) -> list[str]:
        first = await inner(c, "before")
        middle = await outer(c)
        return [first, middle, await inner(c, "after"), await inner(c, "last")]

    [paused] = await flow.run("wf")
    assert paused.status == "paused"
    [done] = await flow.run()
    assert done.result == ["BEFORE", "IN1IN2", "AFTER", "LAST"]
    [stored] = snapshot
    lines = stored.split(b"\n")
    replaced = [json.loads(line) for line in lines[1:-1] if json.loads(line)[0] == 1]
    assert replaced, "the loaded step of `outer` was replaced by an appended line"
    assert replaced[-1][1]["value"] == "IN1IN2"
    record = RunRecord.decode(stored, "here", done.run_id)
    assert record.steps[1]["kind"] == "sideeffect"
    assert record.steps[1]["value"] == "IN1IN2"

    # The store as a crash at that moment leaves it: the next invocation goes on from there.
    (tmp_path / "finished" / f"{done.run_id}.json").rename(_file(tmp_path, done.run_id))
    _file(tmp_path, done.run_id).write_bytes(stored)
    ran.clear()
    [again] = await flow.run()
    assert again.result == ["BEFORE", "IN1IN2", "AFTER", "LAST"]
    assert ran == Counter({"after": 1, "last": 1})


_HEAD = (
    '{"asyncflow":"run","format":1,"run_id":"r1","workflow":"wf","trigger":"wf",'
    '"status":"paused","created_at":1.0,"updated_at":2.0,"args":null,"result":null,'
    '"error":null,"wake_at":null,"wait_event":null,"steps":'
)
_STEPS = [
    {"kind": "sideeffect", "name": "io", "span": 0, "value": {"é": [1, 2.5]}, "at": 3.0},
    {"kind": "pause", "at": 4.0},
]


@pytest.mark.parametrize(
    "lines",
    [
        # As asyncflow appends them (their texts are kept), and in other forms a hand or
        # another tool may write (read as JSON, encoded again).
        ['[1,{"kind":"sideeffect","name":"io","span":0,"value":{"é":[1,2.5]},"at":3.0}]',
         '[2,{"kind":"pause","at":4.0}]'],
        ['[1, {"kind": "sideeffect", "name": "io", "span": 0, "value": {"é": [1, 2.5]},'
         ' "at": 3.0}]', ' [2,{"kind":"pause","at":4.0}]'],
        ['[1,{"kind":"sideeffect","name":"\\u0069o","span":0,"value":{"\\u00e9":[1,2.5]},'
         '"at":3.0}]', '[2,{"kind":"pause","at":4.0}]'],
        ['[1,{"kind":"pause","at":1.0}]', '[2,{"kind":"pause","at":4.0}]',
         '[1,{"kind":"sideeffect","name":"io","span":0,"value":{"é":[1,2.5]},"at":3.0}]'],
    ],
)  # fmt: skip
def test_appended_lines_decode_to_the_record_written_whole(lines: list[str]) -> None:
    """Whatever form the appended lines take, the record read back, written whole, is the
    record with those steps in its one line."""
    first = [{"kind": "log", "message": "hi"}]
    stored = _HEAD + json.dumps(first, separators=(",", ":")) + "}\n" + "\n".join(lines)
    stored += "\n"
    record = RunRecord.decode(stored.encode(), "here", "r1")
    assert record.steps == [*first, *_STEPS]
    expected = _HEAD + json.dumps([*first, *_STEPS], separators=(",", ":"), ensure_ascii=False)
    assert (
        record.encode().decode()
        == expected.replace(',"updated_at":2.0,', ',"updated_at":4.0,') + "}"
    )


def test_a_line_that_is_not_json_asyncflow_writes_is_named() -> None:
    stored = _HEAD + '[]}\n[0,{"kind":"pause","at":1.0}]\n[1,{"kind":"pause","at":NaN}]\n'
    with pytest.raises(asyncflow.DamagedRecordError, match="line 3"):
        RunRecord.decode(stored.encode(), "here", "r1")


async def test_an_event_delivered_while_a_run_is_recorded_is_not_lost(tmp_path: Path) -> None:
    """One branch waits for an event while the other records side effects; the event is
    delivered (by another flow on the store, as another process would) between two appends.
    The run's next append finds the record changed, and the run is left to the next
    invocation, which has the event; nothing checkpointed runs again."""
    flow = asyncflow.setup(f"file:{tmp_path}")
    emitter = asyncflow.setup(f"file:{tmp_path}")
    ran: Counter[int] = Counter()

    @flow.sideeffect()
    async def step(c: Context, i: int) -> int:
        ran[i] += 1
        if i == 6 and ran[i] == 1:
            await emitter.emit("go", {"n": 42})
        return i

    async def waiter(c: Context) -> Any:
        return await c.wait_event("go")

    async def worker(c: Context) -> list[int]:
        done = []
        for i in range(10):
            if i == 3:
                await c.pause_once()  # the next invocation resumes the run waiting for "go"
            done.append(await step(c, i))
        return done

    @flow.workflow()
    async def wf(c: Context) -> list[Any]:
        return await c.gather(waiter, worker)

    [paused] = await flow.run("wf")
    assert paused.status == "paused"
    results = await flow.run()
    assert results == [], "the run's append found the event's write, and left the run"
    [result] = await flow.run()
    assert (result.status, result.result) == ("succeeded", [{"n": 42}, list(range(10))])
    # Step 6's outcome was not stored when the event came; the steps before it were.
    assert ran == Counter({**dict.fromkeys(range(10), 1), 6: 2})


async def test_a_backend_that_appends_without_its_version_fails_the_conformance_suite(
    tmp_path: Path,
) -> None:
    class Careless(asyncflow.FileBackend):
        async def append(self, key: Any, data: bytes, *, if_version: str) -> str:
            entry = await self.read(key)
            return await super().append(key, data, if_version=entry.version if entry else "")

    made = 0

    async def fresh() -> asyncflow.Backend:
        nonlocal made
        made += 1
        return Careless(tmp_path / str(made))

    with pytest.raises(AssertionError, match="'append' failed: an append with a stale version"):
        await check_backend(fresh)


@pytest.mark.procs
@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_kill_9_mid_recording_loses_and_repeats_no_checkpointed_side_effect(
    tmp_path: Path, loop: str
) -> None:
    """A process records 3,000 side effects and is killed (SIGKILL) at a random moment of it,
    appending or between appends. What was checkpointed is kept and not run again; only the
    side effect in flight may run twice; the record at rest afterwards is one line."""
    n = 3000
    store, journal = tmp_path / "store", tmp_path / "journal.txt"
    argv = [sys.executable, str(HELPERS / "proc_record_flow.py"), str(store), str(journal)]
    argv += [str(n), loop]
    kill_after = random.randint(100, n - 500)

    def executed() -> int:
        return journal.read_bytes().count(b"\n") if journal.exists() else 0

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time_limit()
        while executed() < kill_after:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert deadline(), "the run never got that far"
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    [path] = (store / "active").iterdir()
    data = path.read_bytes()
    assert data.count(b"\n") > 10, "killed while appending (the record has appended lines)"
    record = RunRecord.decode(data, str(path), path.stem)
    kept = [s["value"] for s in record.steps if s["kind"] == "sideeffect" and "value" in s]
    checkpointed = len(kept)
    assert kept == [i * i for i in range(checkpointed)]
    assert executed() in (checkpointed, checkpointed + 1)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)
    assert (result["status"], result["result"]) == ("succeeded", n)
    runs = Counter(int(line) for line in journal.read_text().splitlines())
    assert set(runs) == set(range(n))
    repeated = {i for i, count in runs.items() if count > 1}
    assert repeated <= {checkpointed}, "only the side effect in flight ran again"
    assert runs[checkpointed] <= 2
    at_rest = (store / "finished" / path.name).read_bytes()
    assert b"\n" not in at_rest
    final = RunRecord.decode(at_rest, "here", path.stem)
    assert [s["value"] for s in final.steps if s["kind"] == "sideeffect"] == [
        i * i for i in range(n)
    ]


def time_limit(seconds: float = 60) -> Any:
    import time

    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end
