"""A short fault-injection campaign on each store (the long one: `nox -s faults`): real worker
processes invoking and emitting at once while one of them is killed with SIGKILL at random
moments (tests/faults/). Nothing is lost, nothing stuck, no side effect repeated but the one a
kill interrupted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from faults.campaign import AWS_STARTUP, holds, run_campaign

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = [pytest.mark.procs, pytest.mark.slow]


def check(report: dict[str, object], *, emits: bool = True) -> None:
    assert report["kills"], report
    assert report["runs"], report
    if emits:  # (on a slow AWS store a short campaign may kill every emit before it returns)
        assert report["emits"], report
    assert holds(report), report


@pytest.mark.timeout(180)
def test_kills_on_the_file_backend_lose_no_run_and_no_event(tmp_path: Path) -> None:
    check(run_campaign(f"file:{tmp_path / 'store'}", tmp_path, kills=10, seconds=15))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["s3", "dynamodb"])
def test_kills_on_an_aws_store_lose_no_run_and_no_event(
    kind: str, tmp_path: Path, aws: Aws
) -> None:
    url = aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url()
    env = {"AWS_ENDPOINT_URL": aws.endpoint}
    report = run_campaign(
        url, tmp_path, kills=4, seconds=12, env=env, leases=True, startup=AWS_STARTUP
    )
    check(report, emits=False)
