"""The S3 backend (``s3://bucket/prefix``): one object per key, leases inside the objects."""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import anyio

from .._backend import Entry, Key
from .._exceptions import BackendError, ConfigError, ConflictError, DamagedRecordError
from .._validate import name
from ._aws import (
    DEFAULT_LEASE_SECONDS,
    Held,
    LeasedBackend,
    concurrently,
    shielded,
)

__all__ = ["S3Backend"]

logger = logging.getLogger("asyncflow")

# Every object starts with this line, then the caller's bytes. The header's nonce makes each
# write's bytes, hence its ETag (the MD5 of the bytes), new: a compare-and-swap on the ETag
# cannot be fooled by a writer that stored the same bytes again.
_MAGIC = b"asyncflow-object/1 "
_CONFLICTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# A conditional write or delete of an object that is not there answers NoSuchKey.
_CONFLICTS_IF_MATCH = _CONFLICTS | {"NoSuchKey"}
# Where the store's check is recorded, beside the namespaces (their keys end in "/").
_CHECKED = ".asyncflow-store-check"
# Stores checked by this process: (endpoint, bucket, prefix) -> conditional DeleteObject works.
_checked_stores: dict[tuple[str, str, str], bool] = {}


class _NotImplemented(Exception):
    """The store answered 501 NotImplemented (never leaves this module)."""


def encode_name(name: str) -> str:
    """Any Unicode name as one ASCII key segment (reversible; no ``/``, no dot segments)."""
    return quote(name, safe="-_~").replace(".", "%2E") if name else "%"


def decode_name(segment: str) -> str:
    return "" if segment == "%" else unquote(segment, errors="strict")


@dataclass
class _Object:
    """An object as stored: the caller's bytes (``None`` in a placeholder) and its lease."""

    data: bytes | None
    etag: str
    lease_owner: str | None
    lease_until: float | None


class S3Backend(LeasedBackend):
    """Keeps each run and state value as one object under ``s3://bucket/prefix/``.

    Layout: ``<prefix>/<namespace>/<encoded name>``; each object is one header line
    (``asyncflow-object/1 {...}``) followed by the bytes asyncflow stores. Versions are ETags;
    every write is conditional where asyncflow needs it (``If-Match``, ``If-None-Match: *``),
    so the bucket needs no lock service.

    A claim is a lease written into the object itself with ``If-Match`` on the ETag read: it
    lasts ``lease_seconds`` and each write by the holder renews it; the holder's last write
    ends it. A claim taken over after expiry changes the ETag, so the late holder's next
    write fails instead of overwriting.

    Credentials and region come from the standard AWS chain; ``AWS_ENDPOINT_URL`` or
    ``AWS_ENDPOINT_URL_S3`` point it at any S3-compatible store.

    Args:
        bucket: the bucket; it must exist.
        prefix: where in the bucket (``""``: at the top).
        endpoint_url: the endpoint to use instead of AWS's (MinIO, R2, moto).
        region_name: the region, else the one configured in the environment.
        session: an ``aiobotocore.session.AioSession`` to build the client from (on trio,
            with ``AioConfig(http_session_cls=HttpxSession)`` as its default client config,
            so that it fetches role credentials on trio too).
        client_config: a ``botocore.config.Config`` merged over asyncflow's (which sets the
            httpx HTTP session and the retries).
        lease_seconds: how long a claim lasts without a write by its holder. A side effect
            that runs longer may be executed again by another invocation.
        max_attempts: attempts per request (throttling and network errors are retried with
            exponential backoff).
        clock: the time used for leases (default :func:`time.time`).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        session: Any = None,
        client_config: Any = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_attempts: int = 5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if "/" in name(bucket, "the S3 bucket name", error=ConfigError):
            raise ConfigError(f"the S3 bucket name must not hold a '/', not {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._connect(
            "s3",
            f"S3 bucket {bucket!r}",
            session=session,
            endpoint_url=endpoint_url,
            region_name=region_name,
            client_config=client_config,
            max_attempts=max_attempts,
            lease_seconds=lease_seconds,
            clock=clock,
        )

    _page_size: int | None = None  # S3's own (1,000) unless a test sets a smaller one
    # Whether DeleteObject honours If-Match; None until the store is checked (_check_store).
    _conditional_delete: bool | None = None
    _checking: anyio.Lock

    def __repr__(self) -> str:
        return f"S3Backend({self.bucket!r}, {self.prefix.rstrip('/')!r})"

    @classmethod
    def from_url(cls, url: str) -> S3Backend:
        """``s3://<bucket>/<prefix>`` (the prefix may be empty)."""
        rest = url.removeprefix("s3:")
        bucket, _, prefix = rest.removeprefix("//").partition("/")
        if not rest.startswith("//") or not bucket:
            raise ConfigError(f"backend {url!r} names no bucket: use 's3://<bucket>/<prefix>'")
        return cls(bucket, prefix)

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.rstrip('/')}"

    async def open(self) -> None:
        await super().open()
        self._checking = anyio.Lock()  # made in the loop that uses it, as the client is

    async def _checked(self) -> None:
        """Check the store before this backend's first conditional write (see
        :meth:`_check_store`); reads need no check."""
        if self._conditional_delete is not None:
            return
        self._aws.client  # noqa: B018 (not open: the UsageError saying so, before the lock)
        async with self._checking:
            if self._conditional_delete is None:
                await self._check_store()

    # -- what the store must honour ------------------------------------------------------------

    async def _check_store(self) -> None:
        """Refuse a store that ignores conditional writes; learn whether it deletes
        conditionally. Done before the first conditional write of each opened backend.

        Everything asyncflow promises (each side effect once, one run per key) rests on
        ``If-None-Match: *`` and ``If-Match`` being honoured: a store that ignores them (s3rver
        does) would run side effects twice without a word. The check writes and deletes a
        probe object once per bucket and prefix, then records that it passed in a marker
        object; later opens read only the marker.
        """
        where = (str(self._aws.client.meta.endpoint_url), self.bucket, self.prefix)
        if where in _checked_stores:
            self._conditional_delete = _checked_stores[where]
            return
        marker = f"{self.prefix}{_CHECKED}"
        location = f"s3://{self.bucket}/{marker}"
        found = await self._get_raw(marker, location)
        if found is not None:
            try:
                record = json.loads(found)
                ok = record["conditional_writes"] is True
                conditional_delete = bool(record["conditional_delete"])
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise BackendError(
                    f"{location} is not asyncflow's record of the store's check; move it out"
                    " of the prefix to check the store again",
                    location=location,
                )
        else:
            conditional_delete = await self._probe()
            record = {
                "asyncflow": "store-check",
                "conditional_writes": True,
                "conditional_delete": conditional_delete,
            }
            with contextlib.suppress(ConflictError):  # another invocation checked it too
                await self._aws.call(
                    "put_object",
                    location,
                    conflicts=_CONFLICTS,
                    Bucket=self.bucket,
                    Key=marker,
                    Body=json.dumps(record).encode(),
                    IfNoneMatch="*",
                )
        self._conditional_delete = _checked_stores[where] = conditional_delete

    async def _probe(self) -> bool:
        """Check conditional writes on a probe object; return whether ``DeleteObject`` with
        ``If-Match`` works (else deletes take the fallback in :meth:`delete`).

        Raises:
            BackendError: the store ignores ``If-None-Match`` or ``If-Match`` on PutObject.
        """
        key = f"{self.prefix}.asyncflow-probe-{secrets.token_hex(8)}"
        location = f"s3://{self.bucket}/{key}"
        wrong = '"00000000000000000000000000000000"'

        async def put(**conditions: Any) -> bool:
            try:
                await self._aws.call(
                    "put_object",
                    location,
                    conflicts=_CONFLICTS,
                    Bucket=self.bucket,
                    Key=key,
                    Body=b"asyncflow probe",
                    **conditions,
                )
            except ConflictError:
                return False
            return True

        await put()
        try:
            for header, conditions in (
                ("If-None-Match", {"IfNoneMatch": "*"}),
                ("If-Match", {"IfMatch": wrong}),
            ):
                if await put(**conditions):
                    raise BackendError(
                        f"the store of s3://{self.bucket}/{self.prefix} ignores conditional"
                        f" writes (PutObject with {header} succeeded where it must fail):"
                        " asyncflow needs them to run each side effect once; use a store"
                        " that honours If-None-Match and If-Match (AWS S3, MinIO, R2, moto)",
                        location=location,
                    )
            try:
                return not await self._delete_object(key, location, wrong)
            except ConflictError:
                return True  # refused, as it must be
            except _NotImplemented:
                return False
        finally:
            await self._aws.call("delete_object", location, Bucket=self.bucket, Key=key)

    async def _delete_object(self, key: str, location: str, if_match: str) -> bool:
        """``DeleteObject`` with ``If-Match``; whether it deleted.

        Raises:
            ConflictError: the object is not at that version (or not there).
            _NotImplemented: the store does not delete conditionally (LocalStack: 501).
        """
        from botocore.exceptions import ClientError

        async with self._aws.limiter:
            with self._aws.boundary("delete_object", location, _CONFLICTS_IF_MATCH):
                try:
                    await self._aws.client.delete_object(
                        Bucket=self.bucket, Key=key, IfMatch=if_match
                    )
                except ClientError as exc:
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if exc.response.get("Error", {}).get("Code") == "NotImplemented" or (
                        status == 501
                    ):
                        raise _NotImplemented from None
                    raise
        return True

    async def _get_raw(self, key: str, location: str) -> bytes | None:
        try:
            async with self._aws.limiter:
                with self._aws.boundary("get_object", location, frozenset({"NoSuchKey"})):
                    response = await self._aws.client.get_object(Bucket=self.bucket, Key=key)
                    async with response["Body"] as stream:
                        body: bytes = await stream.read()
        except ConflictError:  # NoSuchKey
            return None
        return body

    def _key(self, key: Key) -> str:
        return f"{self.prefix}{key[0]}/{encode_name(key[1])}"

    def locate(self, key: Key) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    # -- the stored form -----------------------------------------------------------------------

    def _pack(self, data: bytes | None, lease: bool) -> bytes:
        header: dict[str, Any] = {"n": secrets.token_hex(8)}
        if lease:
            header["lease"] = [self._leases.owner, self._leases.until()]
        if data is None:
            header["placeholder"] = True
        return _MAGIC + json.dumps(header).encode() + b"\n" + (data or b"")

    def _unpack(self, key: Key, body: bytes, etag: str) -> _Object:
        end = body.find(b"\n")
        try:
            if not body.startswith(_MAGIC) or end < 0:
                raise ValueError("no asyncflow header")
            header = json.loads(body[len(_MAGIC) : end])
            lease = header.get("lease") or [None, None]
            owner, until = str(lease[0]) if lease[0] else None, lease[1]
            if until is not None:
                until = float(until)
        except (ValueError, TypeError, IndexError, RecursionError):
            raise DamagedRecordError(
                f"{self.locate(key)} is not an object asyncflow wrote; asyncflow leaves it"
                " untouched: restore it from a backup or move it out of the prefix",
                location=self.locate(key),
            ) from None
        data = None if header.get("placeholder") else body[end + 1 :]
        return _Object(data, etag, owner, until)

    async def _get(self, key: Key) -> _Object | None:
        location = self.locate(key)
        client = self._aws.client
        try:
            # The body is read under the same hold of the limiter: a response whose body is
            # unread keeps its pooled connection, and waiting for the limiter with it would
            # starve the requests that hold the limiter of connections.
            async with self._aws.limiter:
                with self._aws.boundary("get_object", location, frozenset({"NoSuchKey"})):
                    response = await client.get_object(Bucket=self.bucket, Key=self._key(key))
                    async with response["Body"] as stream:
                        body = await stream.read()
        except ConflictError:  # NoSuchKey: not there
            return None
        return self._unpack(key, body, response["ETag"])

    async def _put(self, key: Key, body: bytes, **conditions: Any) -> str:
        if conditions:
            await self._checked()
        response = await self._aws.call(
            "put_object",
            self.locate(key),
            conflicts=_CONFLICTS_IF_MATCH if "IfMatch" in conditions else _CONFLICTS,
            Bucket=self.bucket,
            Key=self._key(key),
            Body=body,
            **conditions,
        )
        return str(response["ETag"])

    # -- operations ----------------------------------------------------------------------------

    async def read(self, key: Key) -> Entry | None:
        found = await self._get(key)
        if found is None or found.data is None:
            return None
        return Entry(found.data, found.etag)

    async def read_many(self, keys: Sequence[Key]) -> builtins.list[Entry | None]:
        found: builtins.list[Entry | None] = [None] * len(keys)

        async def one(i: int) -> None:
            found[i] = await self.read(keys[i])

        await concurrently(functools.partial(one, i) for i in range(len(keys)))
        return found

    async def _write(
        self, key: Key, data: bytes, if_version: str | None, if_absent: bool, release: bool
    ) -> str:
        held = self._holding(key)
        conditions: dict[str, Any] = {}
        if if_absent:
            if held is not None and held.placeholder is not None:
                # Our own placeholder stands in for "absent".
                conditions["IfMatch"] = held.placeholder
            else:
                conditions["IfNoneMatch"] = "*"
        if if_version is not None:
            conditions["IfMatch"] = if_version
        # Each write by the holder renews its lease; a write by anyone else ends any lease.
        etag = await self._put(
            key, self._pack(data, lease=held is not None and not release), **conditions
        )
        self._wrote(held, etag, data, release)
        return etag

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        if if_version is None:
            await self._aws.call(
                "delete_object", self.locate(key), Bucket=self.bucket, Key=self._key(key)
            )
        else:
            await self._delete_if(key, if_version)
        self._deleted(key)

    async def _delete_if(self, key: Key, version: str) -> None:
        """Delete ``key`` if it is at ``version``, on stores with or without conditional
        ``DeleteObject``.

        Without it (LocalStack answers 501), the compare-and-swap is a conditional write: a
        placeholder leased by us replaces the version (``If-Match``), so from then on readers
        see the key absent and nobody else may take or overwrite it; the unconditional delete
        that follows removes only that placeholder. Should this process die in between, the
        placeholder is one of a dead claim, which the next claim clears once the lease ends.
        """
        await self._checked()
        if self._conditional_delete:
            try:
                await self._delete_object(self._key(key), self.locate(key), version)
                return
            except _NotImplemented:
                self._conditional_delete = False  # the check at open did not see it: learn
        await self._put(key, self._pack(None, lease=True), IfMatch=version)
        await self._aws.call(
            "delete_object", self.locate(key), Bucket=self.bucket, Key=self._key(key)
        )

    async def list(self, namespace: str) -> dict[str, str]:
        start = f"{self.prefix}{namespace}/"
        location = f"s3://{self.bucket}/{start}"
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            more: dict[str, Any] = {"ContinuationToken": token} if token else {}
            if self._page_size is not None:
                more["MaxKeys"] = self._page_size
            page = await self._aws.call(
                "list_objects_v2", location, Bucket=self.bucket, Prefix=start, **more
            )
            for item in page.get("Contents", ()):
                segment = item["Key"][len(start) :]
                try:
                    name = decode_name(segment)
                except UnicodeDecodeError:
                    name = None
                if name is None or encode_name(name) != segment:
                    # Not ours: never read, never written; said, so that someone moves it.
                    logger.warning(
                        "s3://%s/%s is not an object asyncflow wrote (its name is not one"
                        " asyncflow would give); it is skipped: move it out of the prefix",
                        self.bucket,
                        item["Key"],
                    )
                    continue
                found[name] = str(item["ETag"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return found

    # -- claims --------------------------------------------------------------------------------

    async def _take(self, key: Key, expected: str | None) -> Entry | bool | None:
        """Take the lease on ``key`` if it is at version ``expected`` (``None``: any) and
        nobody else's lease is active.

        Returns the entry as held, ``True`` for a placeholder taken over, ``None`` if not
        taken.
        """
        found = await self._get(key)
        if found is None:
            return None
        if expected is not None and found.etag != expected:
            return None
        if self._leases.active(found.lease_until):
            return None
        try:
            etag = await self._put(key, self._pack(found.data, lease=True), IfMatch=found.etag)
        except ConflictError:
            return None
        if found.data is None:
            # The placeholder of a claim whose holder died before writing: now ours.
            self._leases.held[key] = Held(None, None, placeholder=etag)
            return True
        self._leases.held[key] = Held(etag, found.data)
        return Entry(found.data, etag)

    async def _take_new(self, key: Key) -> bool:
        # New runs are what the runtime claims this way: try the placeholder first.
        return await self._take_absent(key) or await self._take(key, None) is not None

    async def _take_absent(self, key: Key) -> bool:
        """Hold a key with nothing stored by writing a placeholder (first writer wins)."""
        try:
            etag = await self._put(key, self._pack(None, lease=True), IfNoneMatch="*")
        except ConflictError:
            return False
        self._leases.held[key] = Held(None, None, placeholder=etag)
        return True

    async def _release(self, key: Key) -> None:
        held = self._leases.held.pop(key, None)
        if held is None or held.released:
            return
        if held.placeholder is not None:
            placeholder = held.placeholder
            await shielded(lambda: self.delete(key, if_version=placeholder), self.locate(key))
        elif held.data is not None and held.version is not None:
            data, version = held.data, held.version
            await shielded(
                lambda: self._put(key, self._pack(data, lease=False), IfMatch=version),
                self.locate(key),
            )
