"""Flow.start_many: many runs stored in batches, on every backend."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import asyncflow
from asyncflow import Context

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = pytest.mark.anyio


AWS = [pytest.param(k, marks=pytest.mark.aws) for k in ("s3", "dynamodb")]


@pytest.fixture(params=["memory", "file", *AWS])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str | asyncflow.Backend:
    """A fresh store of each kind (S3 and DynamoDB: moto's server)."""
    if request.param == "memory":
        return asyncflow.MemoryBackend()
    if request.param == "file":
        return f"file:{tmp_path / 'store'}"
    aws: Aws = request.getfixturevalue("aws")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    return aws.new_s3_url() if request.param == "s3" else aws.new_dynamodb_url()


def _flow(store: str | asyncflow.Backend) -> asyncflow.Flow:
    flow = asyncflow.setup(store)

    @flow.workflow()
    async def job(c: Context, args: dict[str, Any]) -> Any:
        return args["n"]

    @flow.workflow(trigger="job")
    async def audit(c: Context, args: dict[str, Any]) -> str:
        return f"audited {args['n']}"

    return flow


async def test_runs_are_stored_in_order_and_executed_by_the_next_run(
    store_url: str | asyncflow.Backend,
) -> None:
    flow = _flow(store_url)
    async with flow:
        ids = await flow.start_many("job", [{"n": n} for n in range(150)])
        assert len(ids) == 300, "one run per bound workflow per item"
        runs = {r.run_id: r for r in await flow.list_runs()}
        assert set(runs) == set(ids)
        # Item by item, each item's runs in the order their workflows were registered.
        assert [(runs[i].workflow, runs[i].args["n"]) for i in ids] == [
            (w, n) for n in range(150) for w in ("job", "audit")
        ]
        assert {r.status for r in runs.values()} == {"pending"}
        results = {r.run_id: r for r in await flow.run()}
        assert set(results) == set(ids)
        assert [results[i].result for i in ids[:4]] == [0, "audited 0", 1, "audited 1"]
        assert await flow.start_many("job", []) == []


async def test_keys_are_honoured(store_url: str | asyncflow.Backend) -> None:
    flow = _flow(store_url)
    async with flow:
        [old_job, old_audit] = await flow.start("job", {"n": -1}, key="k1")
        ids = await flow.start_many(
            "job", [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}], keys=["k1", "k2", None, "k2"]
        )
        # k1 started runs already; k2 twice in one call starts one run each.
        assert ids[:2] == [old_job, old_audit]
        assert ids[2:4] == ids[6:8]
        assert len(set(ids)) == 6
        runs = {r.run_id: r for r in await flow.list_runs()}
        assert len(runs) == 6
        assert sorted(r.args["n"] for r in runs.values() if r.workflow == "job") == [-1, 2, 3]
        assert await flow.start("job", {"n": 9}, key="k2") == ids[2:4]


async def test_a_bad_item_is_rejected_with_nothing_written(
    store_url: str | asyncflow.Backend,
) -> None:
    flow = _flow(store_url)
    async with flow:
        with pytest.raises(asyncflow.SerializationError, match="item 2 of args_list"):
            await flow.start_many("job", [{"n": 0}, {"n": 1}, {"n": math.nan}, {"n": 3}])
        with pytest.raises(asyncflow.UsageError, match="item 1"):
            await flow.start_many("job", [{"n": 0}, {"n": 1}], keys=["a", ""])
        with pytest.raises(asyncflow.UsageError, match="2 keys for 1 args"):
            await flow.start_many("job", [{"n": 0}], keys=["a", "b"])
        with pytest.raises(asyncflow.UnknownTriggerError):
            await flow.start_many("nothing", [{"n": 0}])
        assert await flow.list_runs() == []
        assert await flow.run() == []


async def test_a_taken_id_is_reported_not_dropped(
    store_url: str | asyncflow.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = asyncflow.setup(store_url)

    @flow.workflow()
    async def job(c: Context, args: dict[str, Any]) -> Any:
        return args["n"]

    async with flow:
        [taken] = await flow.start("job", {"n": "first"})
        # The next ids drawn: a fresh one, then the taken one, then fresh ones.
        import asyncflow._engine as engine

        real = engine.new_run_id
        drawn = iter([real(), taken])
        monkeypatch.setattr(engine, "new_run_id", lambda: next(drawn, None) or real())
        with pytest.raises(asyncflow.ConflictError, match=rf"item 1 \(run {taken}\)") as caught:
            await flow.start_many("job", [{"n": 0}, {"n": 1}, {"n": 2}])
        assert "the other 2 runs were stored" in str(caught.value)
        runs = {r.run_id: r.args["n"] for r in await flow.list_runs()}
        assert runs[taken] == "first", "the stored run is not overwritten"
        assert sorted(runs.values(), key=str) == [0, 2, "first"]


async def test_store_create_runs_reports_each_conflict(tmp_path: Path) -> None:
    from asyncflow._record import RunRecord
    from asyncflow._store import Store

    for backend in (asyncflow.MemoryBackend(), asyncflow.FileBackend(tmp_path / "s")):
        store = Store(backend)
        records = [
            RunRecord(run_id=f"run-{n}", workflow="w", trigger="w", args=n, created_at=1.0)
            for n in range(200)
        ]
        await store.create_run(records[7])
        outcomes = await store.create_runs(records)
        assert isinstance(outcomes[7], asyncflow.ConflictError)
        assert all(isinstance(v, str) and v for i, v in enumerate(outcomes) if i != 7)
        found = await store.read_run("run-8")
        assert found is not None
        assert found[0].args == 8
        await backend.aclose()


async def test_file_create_many_keeps_every_name_form(tmp_path: Path) -> None:
    backend = asyncflow.FileBackend(tmp_path / "s")
    long_name, accented = "x" * 300, "Émile"
    await backend.write(("active", "taken"), b"old")
    items = [(("active", n), n.encode()) for n in ("a", long_name, accented, "taken")]
    outcomes = await backend.create_many(items)
    assert isinstance(outcomes[3], asyncflow.ConflictError)
    for (key, data), version in zip(items[:3], outcomes[:3], strict=True):
        entry = await backend.read(key)
        assert entry is not None
        assert (entry.data, entry.version) == (data, version)
    assert set(await backend.list("active")) == {"a", long_name, accented, "taken"}
    old = await backend.read(("active", "taken"))
    assert old is not None
    assert old.data == b"old"
    assert [p.name for p in (tmp_path / "s" / "active").iterdir() if p.name.startswith(".")] == []
    await backend.aclose()


async def test_file_writes_grouped_together_keep_each_condition(tmp_path: Path) -> None:
    import anyio

    backend = asyncflow.FileBackend(tmp_path / "s", threads=1)
    first = await backend.write(("active", "cas"), b"v0")
    outcomes: dict[str, object] = {}

    async def write(name: str, key: str, version: str | None = None) -> None:
        try:
            outcomes[name] = await backend.write(
                ("active", key), name.encode(), if_version=version, if_absent=key == "new"
            )
        except asyncflow.ConflictError:
            outcomes[name] = "conflict"

    async with anyio.create_task_group() as tg:  # queued together: written in groups
        for n in range(20):
            tg.start_soon(write, f"new-{n}", "new")
            tg.start_soon(write, f"cas-{n}", "cas", first)
            tg.start_soon(write, f"free-{n}", f"free-{n}")
    for prefix in ("new", "cas"):
        won = [k for k, v in outcomes.items() if k.startswith(prefix) and v != "conflict"]
        assert len(won) == 1, f"exactly one {prefix} write holds"
        entry = await backend.read(("active", prefix))
        assert entry is not None
        assert (entry.data, entry.version) == (won[0].encode(), outcomes[won[0]])
    assert len(await backend.list("active")) == 22
    assert not [p for p in (tmp_path / "s" / "active").iterdir() if p.name.startswith(".")]
    await backend.aclose()
