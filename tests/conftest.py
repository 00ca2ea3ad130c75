from __future__ import annotations

import logging
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncflow
from asyncflow.testing import MockClock

# -- markers (pyproject.toml declares them; `nox -s quick` leaves these out) ----------------------

# A test that uses one of these fixtures talks to moto's server, dynalite or s3rver: marked
# `aws` here, by fixture use (transitively), so a new test is marked without being told.
AWS_FIXTURES = {"aws", "dynalite", "s3rver"}
# The markers of tests allowed to start a process (see `_processes_are_marked`).
PROCESS_MARKERS = ("procs", "aws", "browser", "package")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if AWS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.aws)


@pytest.fixture(autouse=True)
def _processes_are_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts a process (subprocess, anyio's or asyncio's run_process, all of which
    go through ``subprocess.Popen``) must be marked `procs` (or `aws`, `browser`, `package`,
    whose servers are processes): the fast session (`nox -s quick`) leaves them out by their
    markers, and this keeps those markers true as tests are added."""
    if any(request.node.get_closest_marker(name) for name in PROCESS_MARKERS):
        return
    started = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"{request.node.nodeid} starts a process ({args!r}): mark it"
            " @pytest.mark.procs (the fast session leaves such tests out)",
            pytrace=False,
        )
        started(self, args, *rest, **kwargs)  # pragma: no cover  (fail raises)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(params=["memory", "file", "packed"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty backend of each kind that runs fast enough for every flow test.

    ``packed``: runs kept in packs (asyncflow.PackedBackend) over memory, with 4 packs so that
    the tests' runs share them.

    (The S3 and DynamoDB backends run the conformance suite and their own flow tests against
    moto, in tests/test_aws_backends.py: moto answers about a hundred requests a second here,
    too slow to run every flow test through it.)
    """
    if request.param == "file":
        return f"file:{tmp_path / 'store'}"
    return "memory:" if request.param == "memory" else "memory:?packs=4"


class Aws:
    """moto's server: a real S3 and DynamoDB endpoint over HTTP on 127.0.0.1."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        session = boto3.session.Session()  # the credentials in the environment now
        self.s3 = session.client("s3", endpoint_url=endpoint)
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint)

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
        backend: asyncflow.Backend | str = backend_url
        if backend_url == "memory:":
            backend = memory
        elif backend_url.startswith("memory:?packs="):  # a new packing object per flow
            backend = asyncflow.PackedBackend(memory, packs=4)
        return asyncflow.setup(backend, **kwargs)  # type: ignore[arg-type]

    return make


# -- servers from npm (.ci/run installs them into .ci/node_modules) ---------------------------

NODE_MODULES = Path(__file__).resolve().parent.parent / ".ci" / "node_modules"


def node_server(name: str, *args: str) -> Iterator[str]:
    """Start the npm package ``name``'s server on a free loopback port; yield its endpoint.

    Skipped where node or the package is missing, unless ASYNCFLOW_NODE_SERVERS=required
    (as `.ci/run` sets it): CI must not pass by skipping them.
    """
    import shutil
    import socket
    import subprocess
    import time

    node = shutil.which("node")
    script = NODE_MODULES / ".bin" / name
    if node is None or not script.exists():
        message = f"{name} is not installed: run `npm ci --prefix .ci` (see .ci/run)"
        if os.environ.get("ASYNCFLOW_NODE_SERVERS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [node, str(script), *(a.format(port=port) for a in args)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:  # polling the port: the server says nothing machine-readable when ready
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"{name} did not start: {err}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


class Dynalite(Aws):
    """dynalite (npm): a DynamoDB written independently of AWS and of moto."""

    def new_bucket(self) -> str:
        raise NotImplementedError("dynalite serves DynamoDB only")

    def new_table(self) -> str:
        name = super().new_table()
        # dynalite creates a table in the background, as DynamoDB does.
        self.dynamodb.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        return name


@pytest.fixture(scope="session")
def dynalite(aws: Aws) -> Iterator[Dynalite]:
    """dynalite on 127.0.0.1 (in memory), for the session (credentials: the aws fixture's)."""
    for endpoint in node_server(
        "dynalite", "--host", "127.0.0.1", "--port", "{port}", "--createTableMs", "0"
    ):
        yield Dynalite(endpoint)


@pytest.fixture
def s3rver(tmp_path: Path, aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """s3rver (npm): an S3 server that ignores conditional writes (If-None-Match, If-Match)."""
    folder = tmp_path / "s3rver"
    folder.mkdir()
    # The credentials s3rver checks signatures with.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    for endpoint in node_server(
        "s3rver", "--address", "127.0.0.1", "--port", "{port}", "--directory", str(folder),
        "--silent",
    ):  # fmt: skip
        yield Aws(endpoint)
