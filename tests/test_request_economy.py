"""What one invocation that advances many paused runs costs in requests on S3 and DynamoDB.

Requests are what a deployment on S3 or DynamoDB pays for, and (at about 3 ms of client CPU
each in botocore and httpx) what bounds how many watched runs one invocation can advance in
Lambda's 900 s. The requests are counted as they leave the client, with botocore's own
``before-send`` event (every attempt, retries included), against moto's server: a real HTTP
endpoint, not a mock of the store.

The bound asserted is today's measured figure, so that the economy can only get better
without this file noticing; issue 14's target is 0.05 requests per advanced run (many small
runs sharing one stored object or item), and whoever reaches it lowers the figures here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from request_counts import Requests
from watched import watch_flow

import asyncflow

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = pytest.mark.anyio

RUNS = 20  # enough that the per-invocation listings are a small share of the total

# Requests per advanced run, measured on this code (S3: read the run, take its lease with a
# conditional write, write the final checkpoint, plus 3 listings per invocation; DynamoDB:
# lease and read in one UpdateItem, the final checkpoint, plus 3 queries per invocation).
# Issue 14's target is 0.05 per run on both: lower these when the layout changes.
# Per invocation: the listings, and the read of packs/meta that refuses a store with packs
# opened without them. With packs (tests/test_packs.py) a run costs about 0.04 requests.
PER_RUN = {"s3": 3, "dynamodb": 2}
PER_INVOCATION = {"s3": 4, "dynamodb": 4}


@pytest.fixture(params=["s3", "dynamodb"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _backend(kind: str, where: str, aws: Aws, requests: Requests) -> asyncflow.Backend:
    if kind == "s3":
        return asyncflow.S3Backend(
            where, "flows", endpoint_url=aws.endpoint, session=requests.session()
        )
    return asyncflow.DynamoDBBackend(where, endpoint_url=aws.endpoint, session=requests.session())


async def test_requests_per_advanced_run_stay_at_todays_figure_or_below(
    kind: str, aws: Aws
) -> None:
    where = aws.new_bucket() if kind == "s3" else aws.new_table()
    io_calls: list[int] = []
    setup = watch_flow(_backend(kind, where, aws, Requests()), io_calls)
    async with setup:
        for i in range(RUNS):
            await setup.start("watch", {"i": i})
        # Brings every run to its first pause (and makes the S3 store's one-off check that
        # it honours conditional writes, as a warm Lambda container would have).
        assert [r.status for r in await setup.run()] == ["paused"] * RUNS
    io_calls.clear()

    requests = Requests()
    flow = watch_flow(_backend(kind, where, aws, requests), io_calls)  # a fresh invocation
    async with flow:
        results = await flow.run()
    # Every run was advanced by exactly one side effect: the count below is for real work.
    assert [r.status for r in results] == ["paused"] * RUNS
    assert sorted(io_calls) == list(range(RUNS))

    total = sum(requests.counts.values())
    bound = PER_RUN[kind] * RUNS + PER_INVOCATION[kind]
    assert total <= bound, (
        f"{kind}: {total} requests to advance {RUNS} runs ({total / RUNS:.2f} per run, "
        f"{dict(requests.counts)}); today's bound is {bound}"
    )
