"""Every backend against the conformance suite, and what the file backend promises besides."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import asyncflow
from asyncflow import Context
from asyncflow._record import stored_json
from asyncflow.testing import BACKEND_CHECKS, check_backend

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        "memory",
        "file",
        *(pytest.param(k, marks=pytest.mark.aws) for k in ("s3", "dynamodb", "dynalite")),
        # Packs over each kind of store, with the checks' namespace packed (few packs, so
        # that the checks' objects share them).
        "packed-memory",
        "packed-file",
        *(pytest.param(f"packed-{k}", marks=pytest.mark.aws) for k in ("s3", "dynamodb")),
    ]
)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[asyncflow.Backend]:
    made: asyncflow.Backend
    kind = request.param.removeprefix("packed-")
    if kind != request.param:
        inner = await _made(request, kind, tmp_path)
        made = asyncflow.PackedBackend(inner, packs=4, namespaces=("ns", "active"))
    else:
        made = await _made(request, kind, tmp_path)
    await made.open()
    yield made
    await made.aclose()


async def _made(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> asyncflow.Backend:
    made: asyncflow.Backend
    if kind == "memory":
        made = asyncflow.MemoryBackend()
    elif kind == "file":
        made = asyncflow.FileBackend(tmp_path / "store")
    elif kind == "s3":
        aws = request.getfixturevalue("aws")
        made = asyncflow.S3Backend(aws.new_bucket(), "p", endpoint_url=aws.endpoint)
    else:  # moto's DynamoDB, or dynalite's (npm), written independently of both AWS and moto
        aws = request.getfixturevalue("aws" if kind == "dynamodb" else "dynalite")
        made = asyncflow.DynamoDBBackend(aws.new_table(), endpoint_url=aws.endpoint)
    return made


@pytest.mark.parametrize("check", list(BACKEND_CHECKS))
async def test_conformance(backend: asyncflow.Backend, check: str) -> None:
    await BACKEND_CHECKS[check](backend)


async def test_check_backend_runs_every_check_and_names_a_failure(tmp_path: Path) -> None:
    made = 0

    async def fresh() -> asyncflow.Backend:
        nonlocal made
        made += 1
        return asyncflow.FileBackend(tmp_path / str(made))

    await check_backend(fresh)
    assert made == len(BACKEND_CHECKS)

    class Forgetful(asyncflow.MemoryBackend):
        async def list(self, namespace: str) -> list[str]:
            return []

    async def forgetful() -> asyncflow.Backend:
        return Forgetful()

    with pytest.raises(AssertionError, match="'names' failed: list must return every name"):
        await check_backend(forgetful)


# -- the file backend --------------------------------------------------------------------------


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


async def test_names_never_escape_the_folder(tmp_path: Path) -> None:
    store = tmp_path / "store"
    backend = asyncflow.FileBackend(store)
    for name in ["../x", "../../etc/passwd", "a/b", "/abs", "..", "."]:
        await backend.write(("state", name), b"v")
    assert {p.name for p in os.scandir(tmp_path)} == {"store"}, "nothing beside the folder"
    assert all(p.name.endswith(".json") for p in os.scandir(store / "state"))


async def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    backend = asyncflow.FileBackend(tmp_path)
    v = await backend.write(("ns", "k"), b"1")
    await backend.write(("ns", "k"), b"2", if_version=v)
    with pytest.raises(asyncflow.ConflictError):
        await backend.write(("ns", "k"), b"3", if_version=v)
    assert [p.name for p in (tmp_path / "ns").iterdir()] == ["k.json"]


async def test_claims_exclude_other_backend_objects_on_the_same_folder(tmp_path: Path) -> None:
    one, two = asyncflow.FileBackend(tmp_path), asyncflow.FileBackend(tmp_path)
    async with one.claim(("active", "r")) as held:
        assert held
        async with two.claim(("active", "r")) as other:
            assert not other, "a flock taken through another object must exclude"
    async with two.claim(("active", "r")) as held:
        assert held


async def test_unwritable_folder_is_a_backend_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    backend = asyncflow.FileBackend(blocker)
    with pytest.raises(asyncflow.BackendError, match=str(blocker)):
        await backend.write(("ns", "k"), b"x")


# -- damaged and foreign files through a flow --------------------------------------------------


def _flow(folder: Path) -> asyncflow.Flow:
    flow = asyncflow.setup(f"file:{folder}")

    @flow.workflow()
    async def wf(c: Context) -> None:
        await c.log("hello")
        await c.pause_once()

    return flow


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"some": "other tool"}', b"\xff\xfe", b'{"asyncflow": "run", "format": 1}'],
)
async def test_damaged_run_file_is_reported_skipped_and_kept(
    tmp_path: Path, content: bytes
) -> None:
    flow = _flow(tmp_path)
    [good_id] = await flow.start("wf")
    [bad_id] = await flow.start("wf")
    path = tmp_path / "active" / f"{bad_id}.json"
    path.write_bytes(content)
    results = await flow.run()
    assert [(r.run_id, r.status) for r in results] == [(good_id, "paused"), (bad_id, "damaged")]
    error = results[1].error
    assert error is not None
    assert str(path) in error
    assert path.read_bytes() == content, "never overwritten"
    run = await flow.get_run(bad_id)
    assert run.status == "damaged"
    assert run.error is not None
    assert str(path) in run.error


async def test_a_file_whose_name_asyncflow_never_gives_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = _flow(tmp_path)
    await flow.run("wf")
    stray = tmp_path / "active" / "My Notes.json"
    stray.write_text("{}")
    [result] = await flow.run()
    assert result.status == "succeeded", "the other runs go on"
    assert "My Notes.json" in caplog.text
    assert stray.read_text() == "{}"


async def test_damaged_state_file_is_named_and_kept(tmp_path: Path) -> None:
    flow = _flow(tmp_path)

    @flow.workflow()
    async def reader(c: Context) -> None:
        await c.get_state("price")

    await flow.run("reader")
    path = tmp_path / "state" / "price.json"
    assert not path.exists()
    path.parent.mkdir()
    path.write_text('{"asyncflow": "state", "name": "other", "value": 1}')
    [result] = await flow.run("reader")
    assert result.status == "failed"
    assert result.error is not None
    assert str(path) in result.error
    with pytest.raises(asyncflow.BackendError, match=str(path)):
        await flow.get_state("price")
    assert json.loads(path.read_text())["name"] == "other"


async def test_sideeffect_outcome_is_stored_before_the_next_one_starts(tmp_path: Path) -> None:
    flow = asyncflow.setup(f"file:{tmp_path}")
    seen_on_disk: list[list[str]] = []

    @flow.sideeffect()
    async def step(c: Context, n: int) -> int:
        # (Read as asyncflow reads it: steps checkpointed mid-run may be appended lines.)
        path = tmp_path / "active" / f"{c.run_id}.json"
        record = stored_json(path.read_bytes()) if n else {}
        seen_on_disk.append([s.get("value") for s in record.get("steps", [])])
        return n * 10

    @flow.workflow()
    async def wf(c: Context) -> None:
        for n in range(3):
            await step(c, n)

    [result] = await flow.run("wf")
    assert result.status == "succeeded"
    # When step n starts, the run's file already holds every earlier outcome.
    assert seen_on_disk == [[], [0], [0, 10]]


async def test_finished_runs_move_out_of_the_active_folder(tmp_path: Path) -> None:
    flow = _flow(tmp_path)
    [r] = await flow.run("wf")
    [r] = await flow.run()
    assert r.status == "succeeded"
    assert not (tmp_path / "active" / f"{r.run_id}.json").exists()
    assert (tmp_path / "finished" / f"{r.run_id}.json").exists()
    assert (await flow.get_run(r.run_id)).status == "succeeded"


async def test_interrupted_move_is_completed_not_rerun(tmp_path: Path) -> None:
    flow = _flow(tmp_path)
    [r] = await flow.run("wf")
    [r] = await flow.run()
    finished = tmp_path / "finished" / f"{r.run_id}.json"
    # A crash between storing the final status and moving the file leaves it in active/.
    os.replace(finished, tmp_path / "active" / f"{r.run_id}.json")
    assert await flow.run() == [], "a finished run is not executed again"
    assert finished.exists()
    assert not (tmp_path / "active" / f"{r.run_id}.json").exists()
    assert [x.status for x in await flow.list_runs()] == ["succeeded"]


@pytest.mark.slow
async def test_a_process_opening_many_file_stores_keeps_few_descriptors(tmp_path: Path) -> None:
    # Each store's lock files are open while it is used; 400 stores one after another held
    # 26,000 descriptors before (past a common limit), one store's worth now.
    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = descriptors()
    for i in range(400):
        flow = asyncflow.setup(f"file:{tmp_path / str(i)}")

        @flow.workflow()
        async def wf(c: Context, args: dict[str, int]) -> int:
            await c.set_state("n", args["i"])
            return args["i"]

        assert [r.result for r in await flow.run("wf", {"i": i})] == [i]
    assert descriptors() - before < 20


@pytest.mark.procs
async def test_a_claim_held_by_one_store_survives_another_closing(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import anyio, asyncflow, sys\n"
        "async def main():\n"
        "    async with asyncflow.FileBackend(sys.argv[1]).claim(('active', 'r')) as held:\n"
        "        print(held)\n"
        "anyio.run(main)\n"
    )

    def another_process_takes_it() -> bool:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() == "True"

    one, two = asyncflow.FileBackend(tmp_path), asyncflow.FileBackend(tmp_path)
    await one.write(("active", "r"), b"{}")
    async with one.claim(("active", "r")) as held:
        assert held
        await two.write(("active", "s"), b"{}")
        await two.aclose()
        await one.aclose()  # still holding the claim: its lock must stay
        assert not another_process_takes_it()
    assert another_process_takes_it()


@pytest.mark.procs
async def test_letting_go_of_many_claims_keeps_the_others_of_the_process(tmp_path: Path) -> None:
    """An invocation lets go of its claims (``claim_read``'s sweep) while another holds claims
    in the same lock files: those stay held against other processes; the ones let go are free."""
    import subprocess
    import sys

    from asyncflow._backends._file import _hash

    probe = (
        "import anyio, asyncflow, sys\n"
        "async def main():\n"
        "    b = asyncflow.FileBackend(sys.argv[1])\n"
        "    for name in sys.argv[2:]:\n"
        "        async with b.claim(('active', name)) as held:\n"
        "            print(held)\n"
        "anyio.run(main)\n"
    )

    def others_take(names: list[str]) -> list[bool]:
        out = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path), *names],
            capture_output=True,
            text=True,
            check=True,
        )
        return [line == "True" for line in out.stdout.split()]

    def lock_file(name: str) -> int:
        return _hash(("active", name)) % 64

    kept = "kept"
    # Keys sharing the kept claim's lock file, and keys of other files.
    same = [f"r{i}" for i in range(200_000) if lock_file(f"r{i}") == lock_file(kept)][:5]
    other = [f"r{i}" for i in range(200_000) if lock_file(f"r{i}") != lock_file(kept)][:5]
    backend = asyncflow.FileBackend(tmp_path)
    keys = [("active", name) for name in same + other]
    versions = [await backend.write(key, b"{}") for key in keys]
    async with backend.claim(("active", kept)) as held:
        assert held
        async with backend.claim_read(keys, versions) as entries:
            assert all(entries)
            assert others_take([kept, *same, *other]) == [False] * 11
        assert others_take([kept, *same, *other]) == [False] + [True] * 10
    assert others_take([kept]) == [True]
