from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncflow
from asyncflow.testing import MockClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(params=["memory", "file"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty backend of each kind that runs fast enough for every flow test.

    (The S3 and DynamoDB backends run the conformance suite and their own flow tests against
    moto, in tests/test_aws_backends.py: moto answers about a hundred requests a second here,
    too slow to run every flow test through it.)
    """
    return "memory:" if request.param == "memory" else f"file:{tmp_path / 'store'}"


class Aws:
    """moto's server: a real S3 and DynamoDB endpoint over HTTP on 127.0.0.1."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)

    def new_bucket(self) -> str:
        name = f"asyncflow-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=name)
        return name

    def new_table(self) -> str:
        name = f"asyncflow-{uuid.uuid4().hex[:12]}"
        self.dynamodb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "ns", "AttributeType": "S"},
                {"AttributeName": "name", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "ns", "KeyType": "HASH"},
                {"AttributeName": "name", "KeyType": "RANGE"},
            ],
        )
        return name

    def new_s3_url(self) -> str:
        return f"s3://{self.new_bucket()}/some/prefix"

    def new_dynamodb_url(self) -> str:
        return f"dynamodb://{self.new_table()}"


def _atomic_moto_server() -> Any:
    """moto's threaded server on 127.0.0.1 (a free port), answering one request at a time.

    moto checks a conditional write's condition and then writes, without a lock: two
    concurrent conditional writes to one key can both succeed, which S3 and DynamoDB never
    allow (and the race tests caught: a lease taken twice, a side effect run twice). Each
    request is processed under one lock, as the real services make each conditional write
    atomic; connections are still served by a thread each.
    """
    from moto.server import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        ThreadedMotoServer,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def atomic(environ: dict[str, Any], start_response: Any) -> Any:
        with lock:
            return list(app(environ, start_response))  # the body made under the lock too

    class Server(ThreadedMotoServer):
        def _server_entry(self) -> None:  # moto's own, with the app wrapped
            self._server = make_server(
                "127.0.0.1", 0, atomic, threaded=True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return Server(ip_address="127.0.0.1", port=0, verbose=False)


@pytest.fixture(scope="session")
def aws() -> Iterator[Aws]:
    """moto's server, started once for the session, with test credentials in the environment."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = _atomic_moto_server()
    server.start()
    host, port = server.get_host_and_port()
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
                env.delenv(name, raising=False)
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            env.setenv("AWS_CONFIG_FILE", "/dev/null")
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            yield Aws(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def clock() -> MockClock:
    return MockClock()


@pytest.fixture
def make_flow(backend_url: str, clock: MockClock) -> Callable[..., asyncflow.Flow]:
    """Flows on one shared backend, as successive invocations of one script would see it.

    The memory backend lives in one object, so its flows share that object; file flows share
    the folder.
    """
    memory = asyncflow.MemoryBackend()

    def make(**kwargs: object) -> asyncflow.Flow:
        kwargs.setdefault("clock", clock)
        backend = memory if backend_url == "memory:" else backend_url
        return asyncflow.setup(backend, **kwargs)  # type: ignore[arg-type]

    return make
