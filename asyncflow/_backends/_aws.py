"""What the S3 and DynamoDB backends share: the client, the leases, and error translation.

Imported only when one of these backends is built: it loads aiobotocore and botocore.
"""

from __future__ import annotations

import abc
import builtins
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from .._backend import Backend, DamagedEntry, Entry, Key
from .._exceptions import (
    AsyncflowError,
    BackendError,
    ConfigError,
    ConflictError,
    DamagedRecordError,
    UsageError,
)
from .._validate import positive_int
from .._validate import seconds as checked_seconds

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "AwsClient",
    "Held",
    "Leases",
    "concurrently",
    "lease_owner",
    "shielded",
]

logger = logging.getLogger("asyncflow")

#: How long a claim lasts without a write. Lambda's longest run is 15 minutes: a lease at
#: least that long is never lost by a live Lambda invocation between two checkpoints.
DEFAULT_LEASE_SECONDS = 900.0

# Requests in flight per client: also the size of the HTTP connection pool.
MAX_CONNECTIONS = 64

_THROTTLED = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "TransactionInProgressException",
    }
)
_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "InvalidClientTokenId",
    }
)


def lease_owner() -> str:
    """A name for one backend object, unique across machines (shown in stored leases)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


@dataclass
class Held:
    """This backend object's claim on one key: what it last wrote or read there."""

    version: str | None
    data: bytes | None
    released: bool = False  # the lease was ended by a write, or the key deleted
    placeholder: str | None = None  # the version of a placeholder holding a key with no data


class AwsClient:
    """One aiobotocore client, opened by :meth:`open` and closed by :meth:`aclose`.

    Always on aiobotocore's httpx session: it runs on trio as well as asyncio (aiohttp, the
    default, is asyncio only).
    """

    def __init__(
        self,
        service: str,
        *,
        session: AioSession | None,
        endpoint_url: str | None,
        region_name: str | None,
        client_config: Any,
        max_attempts: int,
        describe: str,
    ) -> None:
        positive_int(max_attempts, "max_attempts", error=ConfigError)
        self.service = service
        self.describe = describe  # "S3 bucket 'x'", for messages
        self._session = session
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        # Standard retry mode: throttling and transient errors are retried with exponential
        # backoff and jitter (sleeping with anyio, so on trio too).
        config = AioConfig(
            http_session_cls=HttpxSession,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=MAX_CONNECTIONS,
        )
        self._config = config.merge(client_config) if client_config is not None else config
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self.limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)  # replaced by each open()

    async def open(self) -> None:
        if self._client is not None:
            return
        session = self._session or _new_session()
        # Made here, in the event loop that will use it: a Flow may be opened again later
        # under another loop (asyncio.run per Lambda invocation, or trio).
        self.limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)
        stack = AsyncExitStack()
        with self.boundary("connect", self.describe):
            self._client = await stack.enter_async_context(
                session.create_client(
                    self.service,
                    endpoint_url=self._endpoint_url,
                    region_name=self._region_name,
                    config=self._config,
                )
            )
        self._stack = stack

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with self.boundary("close", self.describe):
                await stack.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise UsageError(
                f"the backend for {self.describe} is not open: use it inside `async with flow:`"
                " (or call `await backend.open()` first)"
            )
        return self._client

    async def call(
        self, operation: str, location: str, conflicts: frozenset[str] = frozenset(), **kw: Any
    ) -> Any:
        """Make one API call; any failure becomes an asyncflow error naming ``location``."""
        method = getattr(self.client, operation)
        async with self.limiter:
            with self.boundary(operation, location, conflicts):
                return await method(**kw)

    @contextmanager
    def boundary(
        self, operation: str, location: str, conflicts: frozenset[str] = frozenset()
    ) -> Iterator[None]:
        """Translate botocore's exceptions into asyncflow's."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, operation, location, conflicts) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise BackendError(
                f"no usable AWS credentials to reach {location} ({exc}): set AWS_PROFILE or"
                " AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role",
                location=location,
            ) from exc
        except NoRegionError as exc:
            raise ConfigError(
                f"no AWS region for {self.describe}: set AWS_REGION (or AWS_DEFAULT_REGION)"
            ) from exc
        except ParamValidationError as exc:
            raise BackendError(
                f"{self.service} cannot take the request for {location}: {exc}", location=location
            ) from exc
        except BotoCoreError as exc:
            raise BackendError(
                f"cannot reach {self.service} for {location}: {exc}", location=location
            ) from exc

    def _client_error(
        self, exc: ClientError, operation: str, location: str, conflicts: frozenset[str]
    ) -> BackendError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in conflicts:
            return ConflictError(
                f"{location} changed (another writer got there first)", location=location
            )
        if code in ("NoSuchBucket", "ResourceNotFoundException"):
            return BackendError(
                f"{self.describe} does not exist (while accessing {location}); create it first",
                location=location,
            )
        if code in _DENIED or status == 403:
            return BackendError(
                f"access denied to {location} ({operation}): {message}", location=location
            )
        if code in _THROTTLED or status == 503:
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
            return BackendError(
                f"{self.service} kept throttling requests for {location}: gave up after"
                f" {attempts} attempts with backoff ({code or status})",
                location=location,
            )
        return BackendError(
            f"{self.service} {operation} failed for {location}: {code or status}: {message}",
            location=location,
        )


_loader: Any = None


def _new_session() -> AioSession:
    """A new session that reads botocore's data files through one process-wide loader.

    Each session otherwise parses the service and endpoint JSON files again, which was most
    of the cost of opening a backend. (Sessions are not shared: one may hold credentials and
    locks tied to the event loop that used it.)
    """
    global _loader
    session = get_session()
    # The session's default config decides how it finds credentials: with the httpx session
    # there too, the instance-role and container providers run on anyio (with aiohttp's, they
    # fail under trio with "no running event loop").
    session.set_default_client_config(AioConfig(http_session_cls=HttpxSession))
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


class Leases:
    """The leases one backend object holds, and how long each lasts."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None) -> None:
        self.seconds = checked_seconds(seconds, "lease_seconds", error=ConfigError)
        self.clock = clock or time.time
        self.owner = lease_owner()
        self.held: dict[tuple[str, str], Held] = {}

    def until(self) -> float:
        """The expiry of a lease taken or renewed now."""
        return self.clock() + self.seconds

    def active(self, until: float | None) -> bool:
        return until is not None and until > self.clock()


async def shielded(fn: Callable[[], Any], what: str) -> None:
    """Run a best-effort cleanup even while cancelled, for a bounded time; log failures.

    Ending a lease early is an optimisation: if it fails, the lease expires on its own.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
        try:
            await fn()
        except BackendError as exc:
            logger.debug("could not release %s: %s", what, exc)


async def concurrently(calls: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Await every call at once. The first asyncflow error cancels the others and is raised
    as itself: a caller sees a ``BackendError``, not a group of them."""
    failure: AsyncflowError | None = None

    async with anyio.create_task_group() as tg:

        async def one(call: Callable[[], Awaitable[object]]) -> None:
            nonlocal failure
            try:
                await call()
            except AsyncflowError as exc:
                if failure is None:
                    failure = exc
                tg.cancel_scope.cancel()

        for call in calls:
            tg.start_soon(one, call)
    if failure is not None:
        raise failure


class LeasedBackend(Backend):
    """Claims as leases, shared by the S3 and DynamoDB backends: what each store does is
    writing (:meth:`_write`), taking (:meth:`_take`, :meth:`_take_new`) and ending
    (:meth:`_release`) one lease."""

    leased_claims = True
    _aws: AwsClient
    _leases: Leases

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts without a write by its holder."""
        return self._leases.seconds

    def _connect(
        self,
        service: str,
        describe: str,
        *,
        session: AioSession | None,
        endpoint_url: str | None,
        region_name: str | None,
        client_config: Any,
        max_attempts: int,
        lease_seconds: float,
        clock: Callable[[], float] | None,
    ) -> None:
        """Set up the client and the leases (called by ``__init__``)."""
        self._aws = AwsClient(
            service,
            session=session,
            endpoint_url=endpoint_url,
            region_name=region_name,
            client_config=client_config,
            max_attempts=max_attempts,
            describe=describe,
        )
        self._leases = Leases(lease_seconds, clock)

    async def open(self) -> None:
        await self._aws.open()

    async def aclose(self) -> None:
        await self._aws.aclose()

    async def write(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        return await self._write(key, data, if_version, if_absent, release=False)

    async def write_and_release(
        self, key: Key, data: bytes, *, if_version: str | None = None, if_absent: bool = False
    ) -> str:
        return await self._write(key, data, if_version, if_absent, release=True)

    @abc.abstractmethod
    async def _write(
        self, key: Key, data: bytes, if_version: str | None, if_absent: bool, release: bool
    ) -> str:
        """:meth:`write`; ``release``: the holder's last write, which ends its lease. A write
        by the holder of the lease renews it; a write by anyone else ends it. Use
        :meth:`_holding` to tell, and :meth:`_wrote` after writing."""

    def _holding(self, key: Key) -> Held | None:
        """This backend object's live lease on ``key``, if it holds one."""
        held = self._leases.held.get(key)
        return held if held is not None and not held.released else None

    def _wrote(self, held: Held | None, version: str, data: bytes, release: bool) -> None:
        """Note what the holder of ``held`` (if any) wrote: its lease ends with ``release``."""
        if held is not None:
            held.version, held.data, held.released = version, data, release
            held.placeholder = None

    def _deleted(self, key: Key) -> None:
        """Note that ``key`` was deleted: a lease on it ended with it."""
        held = self._leases.held.get(key)
        if held is not None:
            held.released = True

    @abc.abstractmethod
    async def _take(self, key: Key, expected: str | None) -> Entry | bool | None:
        """Take the lease on ``key`` at version ``expected`` (``None``: any). Returns the
        entry as held, ``True`` for a placeholder held (nothing stored), ``None`` if not
        taken."""

    async def _take_new(self, key: Key) -> bool:
        """Take the lease on a key expected to hold nothing yet (a new run)."""
        return await self._take(key, None) is not None

    @abc.abstractmethod
    async def _release(self, key: Key) -> None:
        """End this backend's lease on ``key``, if it still holds one."""

    @asynccontextmanager
    async def claim(self, key: Key) -> AsyncIterator[bool]:
        held = self._leases.held
        if key in held:
            yield False
            return
        held[key] = Held(None, None, released=True)  # reserved against our other tasks
        taken = False
        try:
            taken = await self._take_new(key)
        finally:
            if not taken:
                held.pop(key, None)
        try:
            yield taken
        finally:
            if taken:
                await self._release(key)

    @asynccontextmanager
    async def claim_read(
        self, keys: Sequence[Key], versions: Sequence[str]
    ) -> AsyncIterator[builtins.list[Entry | None]]:
        held = self._leases.held
        found: list[Entry | None] = [None] * len(keys)
        mine: set[Key] = set()

        async def take(i: int) -> None:
            key = keys[i]
            held[key] = Held(None, None, released=True)  # reserved against our other tasks
            mine.add(key)
            try:
                taken = await self._take(key, versions[i])
            except DamagedRecordError as exc:
                # Not ours to use: said for this key, while the others are taken (cancelling
                # them mid-request could leave leases that hold them back for a while).
                found[i] = DamagedEntry(b"", "", exc)
                taken = None
            if isinstance(taken, Entry):
                found[i] = taken
            elif taken:
                # A dead claim's placeholder, listed as if it were a run: cleared, so that
                # later invocations do not read it again.
                await self._release(key)
                mine.discard(key)
            else:
                held.pop(key, None)
                mine.discard(key)

        try:
            await concurrently(
                functools.partial(take, i) for i, key in enumerate(keys) if key not in held
            )
            yield found
        finally:
            async with anyio.create_task_group() as tg:
                for key in mine:
                    tg.start_soon(self._release, key)
