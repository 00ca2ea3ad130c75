"""S3-compatible stores that lack conditional requests: one that ignores conditional writes
(s3rver, from npm) is refused before anything is stored; one that answers DeleteObject with
If-Match by 501 NotImplemented (as LocalStack does) keeps working, with every guarantee.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

import asyncflow
from asyncflow import Context
from asyncflow._backends import _s3
from asyncflow.testing import BACKEND_CHECKS

if TYPE_CHECKING:
    from conftest import Aws

pytestmark = pytest.mark.anyio


def counting_flow(url: str, endpoint: str, ran: list[int]) -> asyncflow.Flow:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    flow = asyncflow.setup(asyncflow.S3Backend(bucket, prefix, endpoint_url=endpoint))

    @flow.sideeffect()
    async def act(c: Context, n: int) -> int:
        ran.append(n)
        return n

    @flow.workflow()
    async def counter(c: Context) -> int:
        n = await act(c, 1)
        await c.pause_once()
        return await act(c, n + 1)

    return flow


def objects(aws: Aws, bucket: str) -> list[str]:
    return [o["Key"] for o in aws.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def test_a_store_that_ignores_conditional_writes_is_refused(s3rver: Aws) -> None:
    # s3rver stores a PutObject whatever its If-None-Match or If-Match: runs there would
    # execute side effects twice and store a key's run more than once.
    bucket = s3rver.new_bucket()
    ran: list[int] = []
    flow = counting_flow(f"s3://{bucket}/flows", s3rver.endpoint, ran)
    async with flow:
        with pytest.raises(asyncflow.BackendError) as info:
            await flow.run("counter")
    message = str(info.value)
    assert "ignores conditional writes (PutObject with If-None-Match succeeded" in message
    assert f"s3://{bucket}/flows/" in message
    assert ran == [], "nothing ran"
    assert objects(s3rver, bucket) == [], "nothing stored, the probe removed"


async def test_a_store_checked_once_is_not_checked_again(aws: Aws) -> None:
    """The check costs requests once per bucket and prefix: later processes read a marker."""
    url = aws.new_s3_url()
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    ran: list[int] = []
    async with counting_flow(url, aws.endpoint, ran) as flow:
        [run] = await flow.run("counter")
        assert run.status == "paused"
    marker = aws.s3.get_object(Bucket=bucket, Key=f"{prefix}/.asyncflow-store-check")
    assert json.loads(marker["Body"].read()) == {
        "asyncflow": "store-check",
        "conditional_writes": True,
        "conditional_delete": True,  # moto deletes with If-Match
    }
    assert [k for k in objects(aws, bucket) if "probe" in k] == []
    _s3._checked_stores.clear()  # as a new process would start
    requests: list[str] = []
    session = _session(requests)
    backend = asyncflow.S3Backend(bucket, prefix, endpoint_url=aws.endpoint, session=session)
    await backend.open()
    try:
        await backend.write(("state", "x"), b"1", if_absent=True)
    finally:
        await backend.aclose()
    assert requests == ["GetObject", "PutObject"], "the marker read, then the write itself"


def _session(requests: list[str]) -> Any:
    from aiobotocore.session import get_session

    session = get_session()
    session.register(
        "before-send", lambda event_name, **_: requests.append(event_name.rsplit(".", 1)[-1])
    )
    return session


class NoConditionalDelete:
    """A proxy in front of moto answering DeleteObject with If-Match as LocalStack does
    (501 NotImplemented), and passing every other request through (``drop_put_if_match``:
    without PutObject's If-Match header, as a store ignoring it would): the store under test
    is moto's, the backend under test asyncflow's."""

    def __init__(self, upstream: str, *, drop_put_if_match: bool = False) -> None:
        self.refused = 0
        target = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "DELETE" and "If-Match" in self.headers:
                    proxy.refused += 1
                    error = (
                        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented"
                        b"</Code><Message>A header you provided implies functionality that is"
                        b" not implemented</Message></Error>"
                    )
                    self._answer(501, {"Content-Type": "application/xml"}, error)
                    return
                headers = dict(self.headers)
                if drop_put_if_match and self.command == "PUT":
                    # A store that honours If-None-Match but ignores If-Match on PutObject.
                    headers = {k: v for k, v in headers.items() if k.lower() != "if-match"}
                connection = http.client.HTTPConnection(target.hostname, target.port)
                try:
                    connection.request(self.command, self.path, body, headers)
                    response = connection.getresponse()
                    data = response.read()
                    headers = {
                        k: v
                        for k, v in response.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")
                    }
                    self._answer(response.status, headers, data)
                finally:
                    connection.close()

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_conditional_delete(aws: Aws) -> Iterator[NoConditionalDelete]:
    proxy = NoConditionalDelete(aws.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


async def test_a_store_without_conditional_delete_keeps_working(
    aws: Aws, no_conditional_delete: NoConditionalDelete
) -> None:
    # On LocalStack the first run to finish made every later invocation fail (NotImplemented).
    url = aws.new_s3_url()
    ran: list[int] = []
    for _ in range(3):  # successive invocations, each a new flow, runs finishing in between
        async with counting_flow(url, no_conditional_delete.endpoint, ran) as flow:
            results = await flow.run("counter")
            assert sorted(r.status for r in results) in (["paused"], ["paused", "succeeded"])
    async with counting_flow(url, no_conditional_delete.endpoint, ran) as flow:
        [last] = await flow.run()
        assert last.status == "succeeded"
        assert await flow.backend.list("active") == {}
        runs = await flow.list_runs()
    assert [r.status for r in runs] == ["succeeded"] * 3
    assert sorted(ran) == [1, 1, 1, 2, 2, 2], "each side effect once"
    # The check at the first write found out; no conditional delete was sent after it.
    assert no_conditional_delete.refused == 1


async def test_a_store_that_ignores_if_match_on_put_is_refused(aws: Aws) -> None:
    proxy = NoConditionalDelete(aws.endpoint, drop_put_if_match=True)
    try:
        bucket = aws.new_bucket()
        ran: list[int] = []
        async with counting_flow(f"s3://{bucket}/flows", proxy.endpoint, ran) as flow:
            with pytest.raises(asyncflow.BackendError, match=r"PutObject with If-Match succ"):
                await flow.run("counter")
        assert ran == []
        assert objects(aws, bucket) == []
    finally:
        proxy.close()


@pytest.mark.parametrize("check", list(BACKEND_CHECKS))
async def test_a_store_without_conditional_delete_passes_the_conformance_suite(
    aws: Aws, no_conditional_delete: NoConditionalDelete, check: str
) -> None:
    backend = asyncflow.S3Backend(
        aws.new_bucket(), "p", endpoint_url=no_conditional_delete.endpoint
    )
    await backend.open()
    try:
        await BACKEND_CHECKS[check](backend)
    finally:
        await backend.aclose()
    # At most the check's probe: no conditional delete reaches the store after it.
    assert no_conditional_delete.refused <= 1
