"""The S3 and DynamoDB backends against moto's server (a real HTTP endpoint on 127.0.0.1).

The conformance suite runs over both in tests/test_backends.py; here: flows end to end, leases,
the requests a resumed run costs, errors at the boundary, and records too large to store.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from request_counts import Requests

import asyncflow
from asyncflow import Context
from asyncflow.testing import MockClock

if TYPE_CHECKING:
    from conftest import Aws
pytestmark = pytest.mark.anyio

KEY = ("active", "run-1")
MakeBackend = Callable[..., asyncflow.Backend]


@pytest.fixture(params=[pytest.param(k, marks=pytest.mark.aws) for k in ("s3", "dynamodb")])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(
    params=[
        pytest.param(k, marks=pytest.mark.aws)
        for k in ("s3", "dynamodb", "dynalite", "packed-s3", "packed-dynamodb")
    ]
)
def store(request: pytest.FixtureRequest) -> tuple[str, Aws]:
    """A fresh store's URL and its server: moto's S3 and DynamoDB, and dynalite (npm); and
    moto's with the runs kept in packs (4, so that the tests' runs share them)."""
    if request.param == "dynalite":
        dynalite: Aws = request.getfixturevalue("dynalite")
        return dynalite.new_dynamodb_url(), dynalite
    aws: Aws = request.getfixturevalue("aws")
    kind = request.param.removeprefix("packed-")
    url = aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url()
    return (url if kind == request.param else f"{url}?packs=4"), aws


@pytest.fixture
def make_backend(kind: str, aws: Aws) -> MakeBackend:
    """Backend objects on one fresh bucket (or table), as separate invocations see it."""
    where = aws.new_bucket() if kind == "s3" else aws.new_table()

    def make(**kwargs: Any) -> asyncflow.Backend:
        kwargs.setdefault("endpoint_url", aws.endpoint)
        if kind == "s3":
            return asyncflow.S3Backend(where, "flows/one", **kwargs)
        return asyncflow.DynamoDBBackend(where, **kwargs)

    return make


@pytest.fixture
async def opened() -> AsyncIterator[Callable[[asyncflow.Backend], Any]]:
    backends: list[asyncflow.Backend] = []

    async def open_(backend: asyncflow.Backend) -> asyncflow.Backend:
        await backend.open()
        backends.append(backend)
        return backend

    yield open_
    for backend in backends:
        await backend.aclose()


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test credentials and region, for the tests that talk to a server other than moto."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


# -- flows end to end ------------------------------------------------------------------------


def _flow(backend: str | asyncflow.Backend, **kwargs: Any) -> asyncflow.Flow:
    flow = asyncflow.setup(backend, **kwargs)

    @flow.sideeffect()
    async def act(c: Context, n: int) -> int:
        return n

    @flow.workflow()
    async def counter(c: Context) -> None:
        n = 0
        while True:
            n = await act(c, n + 1)
            await c.set_state("last", n)
            if n == 3:
                return
            await c.pause_once()

    return flow


async def test_a_flow_on_an_aws_url_pauses_resumes_and_finishes(
    store: tuple[str, Aws], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, aws = store
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)  # the standard way to point elsewhere
    flow = _flow(url)
    async with flow:
        [first] = await flow.run("counter")
        assert first.status == "paused"
        assert [r.status for r in await flow.run()] == ["paused"]
        assert await flow.get_state("last") == 2
    # A new flow object (a new process, say) sees the same runs.
    again = _flow(url)
    assert [r.status for r in await again.run()] == ["succeeded"]
    assert await again.run() == []
    [run] = await again.list_runs()
    assert (run.run_id, run.status) == (first.run_id, "succeeded")
    assert [s.value for s in run.steps if s.kind == "sideeffect"] == [1, 2, 3]


async def test_events_timers_keys_branches_and_retries_on_an_aws_store(
    store: tuple[str, Aws], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 5's primitives need nothing of a backend but its interface: the same flow on S3
    and DynamoDB as on files."""
    url, aws = store
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    clock = MockClock()
    flow = asyncflow.setup(url, clock=clock)
    calls: list[str] = []

    @flow.sideeffect(retry=asyncflow.Retry(attempts=2, initial=600, jitter=0))
    async def flaky(c: Context) -> str:
        calls.append("flaky")
        if calls.count("flaky") == 1:
            raise ConnectionError("down")
        return "up"

    @flow.sideeffect()
    async def part(c: Context, n: int) -> int:
        calls.append(f"part{n}")
        return n * n

    @flow.workflow()
    async def deploy(c: Context, args: Any) -> Any:
        squares = await c.map(part, [1, 2, 3])
        approval = await c.wait_event(f"approve:{c.run_id}")
        await c.sleep(3600)
        return [squares, approval, await flaky(c)]

    @flow.workflow(trigger=asyncflow.event_trigger("approve-all"))
    async def audit(c: Context, args: Any) -> Any:
        return args

    async with flow:
        [run] = await flow.run("deploy", {"v": 1}, key="release-1")
        assert run.status == "paused"
        assert await flow.run("deploy", {"v": 1}, key="release-1") == [], "one run per key"
        assert await flow.run() == [], "a waiting run is skipped"
        woken = await flow.emit(f"approve:{run.run_id}", {"by": "ops"})
        assert [(r.run_id, r.status) for r in woken] == [(run.run_id, "paused")]
        wakeup = await flow.next_wakeup()
        assert wakeup is not None
        assert wakeup.timestamp() == clock.now() + 3600
        clock.advance(3600)
        [retrying] = await flow.run()  # the first attempt fails; the retry waits durably
        assert retrying.status == "paused"
        clock.advance(600)
        [done] = await flow.run()
        assert done.result == [[1, 4, 9], {"by": "ops"}, "up"]
        [audited] = await flow.emit("approve-all", 7)
        assert (audited.workflow, audited.result) == ("audit", 7)
    assert sorted(calls[:3]) == ["part1", "part2", "part3"]
    assert calls[3:] == ["flaky", "flaky"], "every side effect ran once, the flaky one twice"


def test_one_flow_serves_successive_event_loops(
    kind: str, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow made at module level, run by `asyncio.run()` per Lambda invocation (or by trio)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    flow = _flow(aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url())
    statuses = [
        [r.status for r in anyio.run(flow.run, trigger, backend=loop)]
        for trigger, loop in (("counter", "asyncio"), (None, "trio"), (None, "asyncio"))
    ]
    assert statuses == [["paused"], ["paused"], ["succeeded"]]


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_command_line_takes_an_aws_backend(
    kind: str,
    aws: Aws,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    loop: str,
) -> None:
    url = aws.new_s3_url() if kind == "s3" else aws.new_dynamodb_url()
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    flow = _flow("memory:")
    started = []
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_:
            flow.cli(["run", "counter", "--backend", url, "--loop", loop, "--json"])
        assert exit_.value.code == 0
        started.append(json.loads(capsys.readouterr().out)[0]["run_id"])
    with pytest.raises(SystemExit):
        flow.cli(["runs", "--backend", url, "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["run_id"] for r in listed) == sorted(started)
    assert {r["status"] for r in listed} == {"paused"}


@pytest.mark.parametrize(
    "url",
    ["s3://", "s3:bucket", "s3:///prefix", "dynamodb://", "dynamodb:table", "dynamodb://t/x"],
)
def test_a_malformed_aws_url_is_a_config_error(url: str) -> None:
    with pytest.raises(asyncflow.ConfigError, match="names no"):
        asyncflow.setup(url)


def test_asyncflow_backend_in_the_environment_names_an_aws_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASYNCFLOW_BACKEND", "s3://from-env/p")
    backend = asyncflow.setup().backend
    assert isinstance(backend, asyncflow.S3Backend)
    assert (backend.bucket, backend.prefix) == ("from-env", "p/")
    monkeypatch.setenv("ASYNCFLOW_BACKEND", "dynamodb://")
    with pytest.raises(asyncflow.ConfigError, match=r"ASYNCFLOW_BACKEND: .* names no table"):
        asyncflow.setup().backend  # noqa: B018


def test_aws_urls_name_their_bucket_prefix_and_table() -> None:
    s3 = asyncflow.setup("s3://my-bucket/some/prefix/").backend
    assert isinstance(s3, asyncflow.S3Backend)
    assert (s3.bucket, s3.prefix) == ("my-bucket", "some/prefix/")
    assert s3.locate(("active", "r")) == "s3://my-bucket/some/prefix/active/r"
    table = asyncflow.setup("dynamodb://my-table").backend
    assert isinstance(table, asyncflow.DynamoDBBackend)
    assert table.locate(("active", "r")) == "dynamodb://my-table/active/r"


async def test_one_client_per_flow_lifetime(kind: str, make_backend: MakeBackend) -> None:
    backend = make_backend()
    flow = _flow(backend)
    async with flow:
        client = backend._aws.client  # type: ignore[attr-defined]
        await flow.run("counter")
        async with flow:  # nested: the same client
            await flow.run()
        assert backend._aws.client is client  # type: ignore[attr-defined]
    with pytest.raises(asyncflow.UsageError, match="not open"):
        await backend.read(KEY)


# -- leases ------------------------------------------------------------------------------------


async def test_a_claim_excludes_others_until_its_lease_expires_then_fences_the_late_holder(
    make_backend: MakeBackend, opened: Any
) -> None:
    clock = MockClock()
    a = await opened(make_backend(clock=clock, lease_seconds=60))
    b = await opened(make_backend(clock=clock, lease_seconds=60))
    listed = await a.write(KEY, b"record")
    async with a.claim_read([KEY], [listed]) as [held]:
        assert held is not None
        assert held.data == b"record"
        async with b.claim_read([KEY], [held.version]) as [other]:
            assert other is None, "a live lease must keep other invocations out"
        async with b.claim(KEY) as taken:
            assert not taken
        clock.advance(61)  # the holder stalled past its lease
        async with b.claim_read([KEY], [held.version]) as [taken_over]:
            assert taken_over is not None
            assert taken_over.data == b"record"
            with pytest.raises(asyncflow.ConflictError):
                await a.write(KEY, b"late write", if_version=held.version)
            await b.write_and_release(KEY, b"by b", if_version=taken_over.version)
    entry = await b.read(KEY)
    assert entry is not None
    assert entry.data == b"by b", "the late holder overwrote nothing"


async def test_each_write_by_the_holder_renews_its_lease(
    make_backend: MakeBackend, opened: Any
) -> None:
    clock = MockClock()
    a = await opened(make_backend(clock=clock, lease_seconds=60))
    b = await opened(make_backend(clock=clock, lease_seconds=60))
    listed = await a.write(KEY, b"0")
    async with a.claim_read([KEY], [listed]) as [held]:
        assert held is not None
        version = held.version
        for step in range(3):
            clock.advance(40)  # 120 s in all: twice the lease, never 60 s without a write
            async with b.claim(KEY) as taken:
                assert not taken, f"lease lost after renewal {step}"
            version = await a.write(KEY, b"%d" % step, if_version=version)


async def test_the_last_write_ends_the_lease_at_once(
    make_backend: MakeBackend, opened: Any
) -> None:
    a = await opened(make_backend())
    b = await opened(make_backend())
    listed = await a.write(KEY, b"0")
    async with a.claim_read([KEY], [listed]) as [held]:
        assert held is not None
        final = await a.write_and_release(KEY, b"paused", if_version=held.version)
        async with b.claim_read([KEY], [final]) as [next_holder]:
            assert next_holder is not None
            assert next_holder.data == b"paused"


async def test_leaving_a_claim_without_writing_releases_it(
    make_backend: MakeBackend, opened: Any
) -> None:
    a = await opened(make_backend())
    b = await opened(make_backend())
    listed = await a.write(KEY, b"0")
    async with a.claim_read([KEY], [listed]) as [held]:
        assert held is not None
    current = (await b.list("active"))[KEY[1]]
    async with b.claim_read([KEY], [current]) as [entry]:
        assert entry is not None
        assert entry.data == b"0"
    # A claim on a key with nothing stored holds it until released, and stores nothing.
    async with a.claim(("active", "new")) as taken:
        assert taken
        async with b.claim(("active", "new")) as other:
            assert not other
        assert await b.read(("active", "new")) is None
    assert "new" not in await b.list("active")
    async with b.claim(("active", "new")) as taken:
        assert taken


async def test_a_crashed_invocations_runs_resume_once_its_lease_expires(
    make_backend: MakeBackend, opened: Any
) -> None:
    clock = MockClock()
    dying = await opened(make_backend(clock=clock, lease_seconds=300))
    crashed = _flow(dying, clock=clock)
    async with crashed:
        await crashed.start("counter")
        [(name, version)] = (await dying.list("active")).items()
        async with dying.claim_read([("active", name)], [version]) as [held]:
            assert held is not None
            # Its process dies here: it forgets its claims, and nothing releases them.
            dying._leases.held.clear()  # type: ignore[attr-defined]
    later = _flow(make_backend(clock=clock, lease_seconds=300), clock=clock)
    assert await later.run() == [], "a live lease keeps the run from a second executor"
    clock.advance(301)
    assert [r.status for r in await later.run()] == ["paused"]


async def test_an_invocation_stalled_past_its_lease_loses_the_run_and_overwrites_nothing(
    make_backend: MakeBackend,
) -> None:
    clock = MockClock()
    executions: list[str] = []
    entered, go_on = anyio.Event(), anyio.Event()

    def make(who: str) -> asyncflow.Flow:
        flow = asyncflow.setup(make_backend(clock=clock, lease_seconds=60), clock=clock)

        @flow.sideeffect()
        async def call(c: Context) -> str:
            executions.append(who)
            if who == "stalled":
                entered.set()
                await go_on.wait()
            return who

        @flow.workflow()
        async def job(c: Context) -> str:
            return await call(c)

        return flow

    stalled, other = make("stalled"), make("other")
    async with stalled, other:
        [run_id] = await stalled.start("job")
        stalled_results: list[asyncflow.RunResult] = []

        async def invoke_stalled() -> None:
            stalled_results.extend(await stalled.run())

        async with anyio.create_task_group() as tg:
            tg.start_soon(invoke_stalled)
            await entered.wait()
            clock.advance(61)  # the side effect outlasts the lease
            [taken_over] = await other.run()
            go_on.set()
        assert stalled_results == [], "the stalled invocation's write was refused"
        assert taken_over.status == "succeeded"
        assert executions == ["stalled", "other"]  # the price of a lease too short
        run = await other.get_run(run_id)
        assert (run.status, run.result) == ("succeeded", "other")


async def test_a_cancelled_invocation_ends_its_leases(make_backend: MakeBackend) -> None:
    flow = asyncflow.setup(make_backend())
    blocking, started = True, 0
    all_started = anyio.Event()

    @flow.sideeffect()
    async def slow(c: Context) -> str:
        nonlocal started
        started += 1
        if started == 3:
            all_started.set()
        if blocking:
            await anyio.sleep_forever()
        return "done"

    @flow.workflow()
    async def job(c: Context) -> str:
        return await slow(c)

    async with flow:
        for _ in range(3):
            await flow.start("job")
        async with anyio.create_task_group() as tg:
            tg.start_soon(flow.run)
            await all_started.wait()
            tg.cancel_scope.cancel()
        blocking = False
        # No lease to wait for: the next invocation resumes all three at once.
        assert [r.status for r in await flow.run()] == ["succeeded"] * 3


async def test_a_dead_claims_placeholder_is_cleared_after_expiry(
    make_backend: MakeBackend, opened: Any
) -> None:
    clock = MockClock()
    a = await opened(make_backend(clock=clock, lease_seconds=60))
    b = await opened(make_backend(clock=clock, lease_seconds=60))
    new = ("active", "new")
    async with a.claim(new) as taken:
        assert taken
        a._leases.held.clear()  # type: ignore[attr-defined]  # its process dies before writing
    async with b.claim(new) as other:
        assert not other
    clock.advance(61)
    listed = await b.list("active")  # S3 lists the placeholder; DynamoDB filters it out
    async with b.claim_read([("active", n) for n in listed], list(listed.values())) as found:
        assert list(found) == [None] * len(listed)
    assert await b.list("active") == {}, "nothing is left to read again"
    async with b.claim(new) as taken:
        assert taken
        await b.write(new, b"created", if_absent=True)
    entry = await a.read(new)
    assert entry is not None
    assert entry.data == b"created"


async def test_listing_reads_every_page(make_backend: MakeBackend, opened: Any) -> None:
    backend = await opened(make_backend())
    backend._page_size = 2  # type: ignore[attr-defined]
    written = {f"run-{i}": await backend.write(("active", f"run-{i}"), b"x") for i in range(5)}
    async with backend.claim(("active", "held")):  # a placeholder: listed by S3 only
        listed = await backend.list("active")
    assert {k: v for k, v in listed.items() if k != "held"} == written


async def test_claiming_more_runs_at_once_than_the_client_has_connections(
    aws: Aws, opened: Any
) -> None:
    backend = await opened(asyncflow.S3Backend(aws.new_bucket(), endpoint_url=aws.endpoint))
    keys = [("active", f"run-{i:03d}") for i in range(70)]  # the pool holds 64
    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(backend.write, key, key[1].encode())
    listed = await backend.list("active")
    async with backend.claim_read(keys, [listed[name] for _, name in keys]) as entries:
        assert [e.data if e else None for e in entries] == [name.encode() for _, name in keys]


# -- requests ----------------------------------------------------------------------------------

EXPECTED_REQUESTS = {
    "s3": {
        # three listings (the runs, the wait index of sleeping and waiting runs, the event
        # log); then the run: read it, take the lease (a conditional write of the same
        # bytes), and the final checkpoint (a conditional write that ends the lease)
        "resume": {"ListObjectsV2": 3, "GetObject": 1, "PutObject": 2},
        # placeholder claim, stored before executing, final checkpoint
        "new": {"ListObjectsV2": 3, "PutObject": 3},
    },
    "dynamodb": {
        # three listings; the lease taken and the item read in one UpdateItem; the final
        # checkpoint
        "resume": {"Query": 3, "UpdateItem": 1, "PutItem": 1},
        "new": {"Query": 3, "UpdateItem": 1, "PutItem": 2},
    },
}


class _OtherInvocationBeforeDelete(asyncflow.Backend):
    """A real AWS backend that, before deleting a run from ``active`` (the end of moving a
    finished run), lets another invocation run: one that finds the finished record there, as
    a racing process listing at that moment does once the final write ended the lease."""

    @property
    def leased_claims(self) -> bool:  # type: ignore[override]
        return self.inner.leased_claims  # claims are the wrapped backend's

    def __init__(self, inner: asyncflow.Backend, other: asyncflow.Flow) -> None:
        self.inner, self.other = inner, other
        self.other_results: list[asyncflow.RunResult] | None = None

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def read(self, key: asyncflow.Key) -> asyncflow.Entry | None:
        return await self.inner.read(key)

    async def write(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        return await self.inner.write(key, data, **conditions)

    async def write_and_release(self, key: asyncflow.Key, data: bytes, **conditions: Any) -> str:
        return await self.inner.write_and_release(key, data, **conditions)

    async def delete(self, key: asyncflow.Key, **conditions: Any) -> None:
        if key[0] == "active" and self.other_results is None:
            self.other_results = await self.other.run()
        await self.inner.delete(key, **conditions)

    async def list(self, namespace: str) -> dict[str, str]:
        return await self.inner.list(namespace)

    def claim(self, key: asyncflow.Key) -> Any:
        return self.inner.claim(key)

    def claim_read(self, keys: Any, versions: Any) -> Any:
        return self.inner.claim_read(keys, versions)


async def test_a_run_whose_move_another_invocation_completes_is_reported_once(
    make_backend: MakeBackend,
) -> None:
    calls: list[str] = []

    def make_flow(backend: asyncflow.Backend) -> asyncflow.Flow:
        flow = asyncflow.setup(backend)

        @flow.sideeffect()
        async def act(c: Context) -> str:
            calls.append(c.run_id)
            return "acted"

        @flow.workflow()
        async def job(c: Context) -> str:
            await c.pause_once()
            return await act(c)

        return flow

    other = make_flow(make_backend())
    racing = _OtherInvocationBeforeDelete(make_backend(), other)
    flow = make_flow(racing)
    async with flow, other:
        [started] = await flow.run("job")
        [result] = await flow.run()
        assert (result.run_id, result.status, result.result) == (
            started.run_id,
            "succeeded",
            "acted",
        )
        assert racing.other_results == [], "the other invocation completed the move, silently"
        assert calls == [started.run_id]
        [stored] = await flow.list_runs()
        assert (stored.run_id, stored.status) == (started.run_id, "succeeded")
        assert await racing.list("active") == {}


async def test_requests_per_run(kind: str, make_backend: MakeBackend) -> None:
    # The S3 store's one-off check (that it honours conditional writes) is made first: this
    # process remembers it passed, as a warm Lambda container does.
    warm = make_backend()
    await warm.open()
    await warm.write(("state", "warm"), b"1", if_absent=True)
    await warm.aclose()
    requests = Requests()
    flow = _flow(make_backend(session=requests.session()))
    async with flow:
        requests.counts.clear()
        state_write = "PutObject" if kind == "s3" else "PutItem"
        state_read = "GetObject" if kind == "s3" else "GetItem"
        for step, trigger in (("new", "counter"), ("resume", None)):
            requests.counts.clear()
            # One side effect, one state write, then a pause.
            [result] = await flow.run(trigger)
            assert result.status == "paused"
            counts = dict(requests.counts)
            counts[state_write] -= 1  # set_state: its own object, written once
            # ... after it was read: a damaged one is never written over.
            counts[state_read] -= 1
            counts = {name: n for name, n in counts.items() if n}
            assert counts == EXPECTED_REQUESTS[kind][step], step


# -- errors ------------------------------------------------------------------------------------


async def test_a_missing_bucket_or_table_is_a_backend_error_naming_it(kind: str, aws: Aws) -> None:
    if kind == "s3":
        backend: asyncflow.Backend = asyncflow.S3Backend(
            "no-such-bucket", endpoint_url=aws.endpoint
        )
    else:
        backend = asyncflow.DynamoDBBackend("no-such-table", endpoint_url=aws.endpoint)
    with pytest.raises(asyncflow.BackendError, match=r"no-such-.* does not exist") as info:
        await _flow(backend).run("counter")  # (said when the flow opens the store)
    assert "no-such-" in str(info.value.location)
    await backend.open()
    try:
        with pytest.raises(asyncflow.BackendError, match=r"does not exist.*active/run-1"):
            await backend.read(KEY)
        # Raised as itself by the calls that fan out, not inside an exception group.
        with pytest.raises(asyncflow.BackendError, match="does not exist"):
            await backend.read_many([KEY, ("active", "run-2")])
        with pytest.raises(asyncflow.BackendError, match="does not exist"):
            async with backend.claim_read([KEY, ("active", "run-2")], ["v1", "v2"]):
                pass
    finally:
        await backend.aclose()


async def test_missing_credentials_or_region_are_named(
    kind: str, aws: Aws, monkeypatch: pytest.MonkeyPatch, opened: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find
    if kind == "dynamodb":
        with pytest.raises(asyncflow.ConfigError, match=r"no AWS region .* set AWS_REGION"):
            await opened(asyncflow.DynamoDBBackend("table", endpoint_url=aws.endpoint))
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        backend = asyncflow.DynamoDBBackend("table", endpoint_url=aws.endpoint)
    else:
        backend = asyncflow.S3Backend("bucket", endpoint_url=aws.endpoint)
    await opened(backend)
    with pytest.raises(asyncflow.BackendError, match=r"no usable AWS credentials to reach .*/k"):
        await backend.read(("state", "k"))


class FakeInstanceMetadata(http.server.ThreadingHTTPServer):
    """The EC2 instance metadata service, as far as credentials go (IMDSv2), on 127.0.0.1."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        role = "/latest/meta-data/iam/security-credentials/"
        credentials = {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": "from-the-role",
            "SecretAccessKey": "secret",
            "Token": "token",
            "Expiration": "2099-01-01T00:00:00Z",
        }
        answers = {
            "/latest/api/token": b"imds-token",
            role: b"the-role",
            role + "the-role": json.dumps(credentials).encode(),
        }
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = urllib.parse.urlsplit(self.path).path  # sent in absolute form
                paths.append(path)
                body = answers.get(path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            do_GET = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


async def test_credentials_from_an_instance_role(
    kind: str, aws: Aws, monkeypatch: pytest.MonkeyPatch, opened: Any
) -> None:
    """aiobotocore fetches them over its own HTTP session: on trio too."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    imds = FakeInstanceMetadata()
    try:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint)
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
        if kind == "s3":
            backend: asyncflow.Backend = asyncflow.S3Backend(
                aws.new_bucket(), endpoint_url=aws.endpoint
            )
        else:
            backend = asyncflow.DynamoDBBackend(aws.new_table(), endpoint_url=aws.endpoint)
        await opened(backend)
        assert await backend.read(KEY) is None
    finally:
        imds.shutdown()
        imds.server_close()
    assert "/latest/meta-data/iam/security-credentials/the-role" in imds.paths


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("credentials")
async def test_an_unreachable_endpoint_is_a_backend_error(kind: str) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    if kind == "s3":
        backend: asyncflow.Backend = asyncflow.S3Backend(
            "bucket", endpoint_url=endpoint, max_attempts=1
        )
    else:
        backend = asyncflow.DynamoDBBackend("table", endpoint_url=endpoint, max_attempts=1)
    with pytest.raises(asyncflow.BackendError, match="cannot reach") as info:
        await _flow(backend).get_state("x")  # (said at the flow's first read of the store)
    assert info.value.location == backend.locate(("packs", "meta"))
    # botocore's exception is kept as the cause (as httpx keeps httpcore's): a traceback
    # shows what botocore said.
    from botocore.exceptions import EndpointConnectionError

    assert isinstance(info.value.__cause__, EndpointConnectionError)


class Canned:
    """A real HTTP server on 127.0.0.1 answering with canned responses, one per request
    (the last repeats), and counting requests: AWS errors that moto does not produce."""

    def __init__(self, responses: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.responses = responses
        self.requests = 0
        canned = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                i = min(canned.requests, len(canned.responses) - 1)
                canned.requests += 1
                status, headers, body = canned.responses[i]
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Canned:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _aws_error(kind: str, code: str, status: int) -> tuple[int, dict[str, str], bytes]:
    if kind == "s3":
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>no</Message></Error>"
        return status, {"Content-Type": "application/xml"}, body.encode()
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "no"})
    return status, {"Content-Type": "application/x-amz-json-1.0"}, body.encode()


def _canned_backend(kind: str, endpoint: str, attempts: int) -> asyncflow.Backend:
    if kind == "s3":
        return asyncflow.S3Backend("bucket", endpoint_url=endpoint, max_attempts=attempts)
    return asyncflow.DynamoDBBackend("table", endpoint_url=endpoint, max_attempts=attempts)


@pytest.mark.usefixtures("credentials")
async def test_access_denied_is_a_backend_error_naming_the_key(kind: str) -> None:
    code = "AccessDenied" if kind == "s3" else "AccessDeniedException"
    with Canned([_aws_error(kind, code, 403 if kind == "s3" else 400)]) as server:
        backend = _canned_backend(kind, server.endpoint, 3)
        await backend.open()
        try:
            with pytest.raises(asyncflow.BackendError, match=r"access denied to .*run-1"):
                await backend.read(KEY)
        finally:
            await backend.aclose()
    assert server.requests == 1, "a denial is not retried"


@pytest.mark.usefixtures("credentials")
async def test_throttling_is_retried_with_backoff_then_reported(kind: str) -> None:
    code = "SlowDown" if kind == "s3" else "ProvisionedThroughputExceededException"
    with Canned([_aws_error(kind, code, 503 if kind == "s3" else 400)]) as server:
        backend = _canned_backend(kind, server.endpoint, 2)
        await backend.open()
        try:
            with pytest.raises(asyncflow.BackendError, match=r"throttl.*run-1.*2 attempts"):
                await backend.read(KEY)
        finally:
            await backend.aclose()
    assert server.requests == 2


@pytest.mark.usefixtures("credentials")
async def test_a_client_config_given_in_code_applies(kind: str) -> None:
    from botocore.config import Config

    code = "SlowDown" if kind == "s3" else "ThrottlingException"
    with Canned([_aws_error(kind, code, 503 if kind == "s3" else 400)]) as server:
        config = Config(retries={"mode": "standard", "total_max_attempts": 1})
        if kind == "s3":
            backend: asyncflow.Backend = asyncflow.S3Backend(
                "bucket", endpoint_url=server.endpoint, client_config=config
            )
        else:
            backend = asyncflow.DynamoDBBackend(
                "table", endpoint_url=server.endpoint, client_config=config
            )
        await backend.open()
        try:
            with pytest.raises(asyncflow.BackendError, match="after 1 attempts"):
                await backend.read(KEY)
        finally:
            await backend.aclose()
    assert server.requests == 1, "the config given overrides asyncflow's 5 attempts"


@pytest.mark.usefixtures("credentials")
async def test_a_request_throttled_once_succeeds_on_retry(kind: str) -> None:
    if kind == "s3":
        ok = (200, {"ETag": '"e1"'}, b'asyncflow-object/1 {"n": "x"}\nhello')
    else:
        item = {"Item": {"d": {"B": "aGVsbG8="}, "v": {"S": "e1"}}}
        ok = (200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(item).encode())
    code = "SlowDown" if kind == "s3" else "ThrottlingException"
    throttled = _aws_error(kind, code, 503 if kind == "s3" else 400)
    with Canned([throttled, ok]) as server:
        backend = _canned_backend(kind, server.endpoint, 3)
        await backend.open()
        try:
            entry = await backend.read(KEY)
        finally:
            await backend.aclose()
    assert entry is not None
    assert entry.data == b"hello"
    assert server.requests == 2


async def test_an_object_asyncflow_did_not_write_is_named_and_skipped(
    aws: Aws, opened: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = aws.new_bucket()
    aws.s3.put_object(Bucket=bucket, Key="p/state/x", Body=b'{"not": "ours"}')
    backend = await opened(asyncflow.S3Backend(bucket, "p", endpoint_url=aws.endpoint))
    with pytest.raises(asyncflow.DamagedRecordError, match=r"s3://.*/p/state/x is not an object"):
        await backend.read(("state", "x"))
    aws.s3.put_object(Bucket=bucket, Key="p/state/a/b", Body=b"")
    assert list(await backend.list("state")) == ["x"]
    assert "s3://" in caplog.text
    assert "p/state/a/b is not an object asyncflow wrote" in caplog.text


# -- large records -----------------------------------------------------------------------------


async def test_a_record_too_large_for_dynamodb_fails_naming_the_run_and_keeps_the_old_one(
    aws: Aws,
) -> None:
    backend = asyncflow.DynamoDBBackend(aws.new_table(), endpoint_url=aws.endpoint)
    flow = asyncflow.setup(backend)

    @flow.sideeffect()
    async def big(c: Context) -> str:
        return "x" * 500_000

    @flow.workflow()
    async def hoard(c: Context) -> int:
        await c.pause_once()
        return len(await big(c))

    async with flow:
        [run] = await flow.run("hoard")
        with pytest.raises(asyncflow.BackendError) as info:  # itself, not in a group
            await flow.run()
        error = info.value
        assert "at most 409,600" in str(error)
        assert str(error.location).endswith(f"/active/{run.run_id}")
        stored = await flow.get_run(run.run_id)
        assert stored.status == "paused", "the stored record is the one before, whole"
        with pytest.raises(asyncflow.BackendError, match="at most"):
            await backend.write(("state", "k"), b"x" * (400 * 1024))
        assert await backend.read(("state", "k")) is None


async def test_s3_stores_large_records_whole(aws: Aws, opened: Any) -> None:
    backend = await opened(asyncflow.S3Backend(aws.new_bucket(), endpoint_url=aws.endpoint))
    data = bytes(range(256)) * 8192  # 2 MiB
    version = await backend.write(KEY, data)
    assert await backend.read(KEY) == asyncflow.Entry(data, version)


def test_lease_and_attempt_settings_are_checked() -> None:
    with pytest.raises(asyncflow.ConfigError, match="lease_seconds"):
        asyncflow.S3Backend("bucket", lease_seconds=0)
    with pytest.raises(asyncflow.ConfigError, match="max_attempts"):
        asyncflow.DynamoDBBackend("table", max_attempts=0)
    with pytest.raises(asyncflow.ConfigError, match="bucket"):
        asyncflow.S3Backend("")
