"""One bad run never stops the others on S3 and DynamoDB (moto's server): a damaged record,
an object or item asyncflow did not write, a damaged state value (issue 9, point 2)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Aws

import asyncflow
from asyncflow import Context

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["s3", "dynamodb"])
def store(request: pytest.FixtureRequest, aws: Aws) -> asyncflow.Backend:
    if request.param == "s3":
        return asyncflow.S3Backend(aws.new_bucket(), "p", endpoint_url=aws.endpoint)
    return asyncflow.DynamoDBBackend(aws.new_table(), endpoint_url=aws.endpoint)


def _flow(backend: asyncflow.Backend, calls: list[str]) -> asyncflow.Flow:
    flow = asyncflow.setup(backend)

    @flow.sideeffect()
    async def act(c: Context, what: str) -> str:
        calls.append(f"{c.run_id} {what}")
        return what

    @flow.workflow()
    async def wf(c: Context) -> str:
        await act(c, "first")
        await c.pause_once()
        return await act(c, "second")

    @flow.workflow()
    async def priced(c: Context) -> Any:
        return await c.get_state("price")

    return flow


def _damage_raw(aws: Aws, backend: asyncflow.Backend, run_id: str, content: bytes) -> None:
    """Write ``content`` in place of the run's record, as another tool would: no asyncflow
    header on S3, a bare item on DynamoDB."""
    if isinstance(backend, asyncflow.S3Backend):
        aws.s3.put_object(Bucket=backend.bucket, Key=f"p/active/{run_id}", Body=content)
    else:
        aws.dynamodb.put_item(
            TableName=backend.table,
            Item={
                "ns": {"S": "active"},
                "name": {"S": f"/{run_id}"},
                "d": {"B": content},
                "v": {"S": "by-hand"},
            },
        )


@pytest.mark.parametrize("how", ["through asyncflow", "by another tool"])
async def test_a_damaged_record_on_aws_is_reported_and_the_others_advance(
    aws: Aws, store: asyncflow.Backend, how: str
) -> None:
    calls: list[str] = []
    flow = _flow(store, calls)
    async with flow:
        ids = [i for _ in range(3) for i in await flow.start("wf")]
        assert [r.status for r in await flow.run()] == ["paused"] * 3
        bad = ids[1]
        if how == "through asyncflow":
            await store.write(("active", bad), b"{cut short")
        else:
            _damage_raw(aws, store, bad, b"{cut short")
        calls.clear()
        results = await flow.run()
        assert [(r.run_id, r.status) for r in results] == [
            (ids[0], "succeeded"),
            (ids[2], "succeeded"),
            (bad, "damaged"),
        ]
        assert store.locate(("active", bad)) in str(results[2].error)
        assert sorted(calls) == sorted(f"{i} second" for i in (ids[0], ids[2]))
        assert [(r.run_id, r.status) for r in await flow.list_runs()][-1] == (bad, "damaged")
        assert (await flow.get_run(bad)).status == "damaged"
        assert [(r.run_id, r.status) for r in await flow.run()] == [(bad, "damaged")]
        if how == "through asyncflow":
            entry = await store.read(("active", bad))
            assert entry is not None
            assert entry.data == b"{cut short", "never overwritten"
        elif isinstance(store, asyncflow.S3Backend):
            body = aws.s3.get_object(Bucket=store.bucket, Key=f"p/active/{bad}")["Body"].read()
            assert body == b"{cut short", "never overwritten"
        else:
            item = aws.dynamodb.get_item(
                TableName=store.table, Key={"ns": {"S": "active"}, "name": {"S": f"/{bad}"}}
            )["Item"]
            assert item["d"]["B"] == b"{cut short", "never overwritten"


async def test_a_damaged_state_value_on_aws_fails_the_run_and_is_kept(
    store: asyncflow.Backend,
) -> None:
    flow = _flow(store, [])
    async with flow:
        await store.write(("state", "price"), b'{"asyncflow": "state", "name": "other"}')
        [result] = await flow.run("priced")
        assert result.status == "failed"
        assert store.locate(("state", "price")) in str(result.error)
        entry = await store.read(("state", "price"))
        assert entry is not None
        assert entry.data == b'{"asyncflow": "state", "name": "other"}'


async def test_an_unstorable_side_effect_value_fails_its_step_on_aws(
    store: asyncflow.Backend,
) -> None:
    flow = asyncflow.setup(store)
    calls: list[int] = []

    @flow.sideeffect()
    async def fetch(c: Context) -> str:
        calls.append(1)
        return "x\ud800y"

    @flow.workflow()
    async def wf(c: Context) -> str:
        try:
            return await fetch(c)
        except asyncflow.SideEffectError as exc:
            await c.pause_once()
            return exc.type_name

    async with flow:
        [first] = await flow.run("wf")
        assert first.status == "paused"
        [done] = await flow.run()
        assert done.result == "SerializationError"
        assert calls == [1]


async def test_a_dynamodb_item_asyncflow_did_not_write_is_named_and_skipped(
    aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    table = aws.new_table()
    flow = _flow(asyncflow.DynamoDBBackend(table, endpoint_url=aws.endpoint), [])
    async with flow:
        [run_id] = await flow.start("wf")
        aws.dynamodb.put_item(
            TableName=table,
            Item={"ns": {"S": "active"}, "name": {"S": "/stray"}, "d": {"B": b"?"}},
        )
        [result] = await flow.run()
        assert (result.run_id, result.status) == (run_id, "paused")
        assert "name '/stray', no version" in caplog.text
