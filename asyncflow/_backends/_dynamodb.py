"""The DynamoDB backend (``dynamodb://table``): one item per key, leases as attributes."""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from .._backend import Entry, Key
from .._exceptions import BackendError, ConfigError, ConflictError
from .._validate import name
from ._aws import (
    DEFAULT_LEASE_SECONDS,
    Held,
    LeasedBackend,
    concurrently,
    shielded,
)

__all__ = ["ITEM_LIMIT", "DynamoDBBackend"]

logger = logging.getLogger("asyncflow")

#: The largest item DynamoDB stores (400 KB, attribute names and values together).
ITEM_LIMIT = 400 * 1024
_CONFLICTS = frozenset({"ConditionalCheckFailedException"})
_FREE_LEASE = "(attribute_not_exists(lo) OR lu < :now)"


class DynamoDBBackend(LeasedBackend):
    """Keeps each run and state value as one item of a DynamoDB table.

    The table must exist, with the string partition key ``ns`` and the string sort key
    ``name`` (on-demand capacity suits asyncflow's bursts)::

        aws dynamodb create-table --table-name my-flow --billing-mode PAY_PER_REQUEST \\
            --attribute-definitions AttributeName=ns,AttributeType=S \\
                AttributeName=name,AttributeType=S \\
            --key-schema AttributeName=ns,KeyType=HASH AttributeName=name,KeyType=RANGE

    Items hold the bytes (``d``), a version (``v``, new on every write) and, while a run is
    claimed, its lease (``lo``: owner, ``lu``: until). Every conditional write is a condition
    expression on ``v``; a claim is one ``UpdateItem`` that takes the lease and returns the
    item, so resuming a run costs that request and its final write. An item holds at most
    400 KB: a larger record is refused with a :class:`BackendError` naming it, never cut.

    Args:
        table: the table's name.
        endpoint_url: the endpoint to use instead of AWS's (DynamoDB Local, moto).
        region_name: the region, else the one configured in the environment.
        session: an ``aiobotocore.session.AioSession`` to build the client from (on trio,
            with ``AioConfig(http_session_cls=HttpxSession)`` as its default client config,
            so that it fetches role credentials on trio too).
        client_config: a ``botocore.config.Config`` merged over asyncflow's.
        lease_seconds: how long a claim lasts without a write by its holder.
        max_attempts: attempts per request (throttling and network errors are retried with
            exponential backoff).
        clock: the time used for leases (default :func:`time.time`).
    """

    item_limit = ITEM_LIMIT

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        session: Any = None,
        client_config: Any = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_attempts: int = 5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.table = name(table, "the DynamoDB table name", error=ConfigError)
        self._connect(
            "dynamodb",
            f"DynamoDB table {table!r}",
            session=session,
            endpoint_url=endpoint_url,
            region_name=region_name,
            client_config=client_config,
            max_attempts=max_attempts,
            lease_seconds=lease_seconds,
            clock=clock,
        )

    _page_size: int | None = None  # DynamoDB's own (1 MB) unless a test sets a smaller one

    def __repr__(self) -> str:
        return f"DynamoDBBackend({self.table!r})"

    @classmethod
    def from_url(cls, url: str) -> DynamoDBBackend:
        """``dynamodb://<table>``"""
        rest = url.removeprefix("dynamodb:")
        table = rest.removeprefix("//")
        if not rest.startswith("//") or not table or "/" in table:
            raise ConfigError(f"backend {url!r} names no table: use 'dynamodb://<table>'")
        return cls(table)

    def url(self) -> str:
        return f"dynamodb://{self.table}"

    def locate(self, key: Key) -> str:
        return f"dynamodb://{self.table}/{key[0]}/{key[1]}"

    @staticmethod
    def _item_key(key: Key) -> dict[str, Any]:
        # A key attribute cannot be empty, and "" is a valid name: every name gets a prefix.
        return {"ns": {"S": key[0]}, "name": {"S": "/" + key[1]}}

    async def _call(self, operation: str, key: Key, **kw: Any) -> Any:
        return await self._aws.call(
            operation, self.locate(key), conflicts=_CONFLICTS, TableName=self.table, **kw
        )

    # -- operations ----------------------------------------------------------------------------

    async def read(self, key: Key) -> Entry | None:
        response = await self._call("get_item", key, Key=self._item_key(key), ConsistentRead=True)
        return _entry(response.get("Item"))

    async def read_many(self, keys: Sequence[Key]) -> list[Entry | None]:
        # BatchGetItem: up to 100 keys a request, any it leaves unprocessed asked again.
        found: dict[tuple[str, str], Entry | None] = {}
        unique = list(dict.fromkeys(keys))
        chunks = [unique[i : i + 100] for i in range(0, len(unique), 100)]

        async def fetch(chunk: list[Key]) -> None:
            request: dict[str, Any] = {
                self.table: {"Keys": [self._item_key(k) for k in chunk], "ConsistentRead": True}
            }
            for attempt in itertools.count():
                response = await self._aws.call(
                    "batch_get_item", self.locate(chunk[0]), RequestItems=request
                )
                for item in response.get("Responses", {}).get(self.table, ()):
                    found[(item["ns"]["S"], item["name"]["S"][1:])] = _entry(item)
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    return
                # Left over when the table is throttled or the answer passed 16 MB: back off.
                await anyio.sleep(min(2.0, 0.05 * 2**attempt))

        await concurrently(functools.partial(fetch, chunk) for chunk in chunks)
        return [found.get(key) for key in keys]

    async def _write(
        self, key: Key, data: bytes, if_version: str | None, if_absent: bool, release: bool
    ) -> str:
        held = self._holding(key)
        version = secrets.token_hex(16)
        item = {**self._item_key(key), "d": {"B": bytes(data)}, "v": {"S": version}}
        if held is not None and not release:
            # Each write by the holder renews its lease; any other write ends any lease.
            item["lo"] = {"S": self._leases.owner}
            item["lu"] = {"N": repr(self._leases.until())}
        self._check_size(key, item)
        conditions: list[str] = []
        values: dict[str, Any] = {}
        if if_absent:
            conditions.append("attribute_not_exists(d)")
            if held is not None and held.placeholder is not None:
                conditions.append("v = :placeholder")
                values[":placeholder"] = {"S": held.placeholder}
        if if_version is not None:
            conditions.append("v = :expected")
            values[":expected"] = {"S": if_version}
        extra: dict[str, Any] = {}
        if conditions:
            extra["ConditionExpression"] = " AND ".join(conditions)
            if values:
                extra["ExpressionAttributeValues"] = values
        await self._call("put_item", key, Item=item, **extra)
        self._wrote(held, version, data, release)
        return version

    def _check_size(self, key: Key, item: dict[str, Any]) -> None:
        size = sum(
            len(name.encode())
            + len(value.get("B", b""))
            + len(value.get("S", "").encode())
            + len(value.get("N", ""))
            for name, value in item.items()
        )
        if size > ITEM_LIMIT:
            raise BackendError(
                f"{self.locate(key)} would be {size:,} bytes, and a DynamoDB item holds at most"
                f" {ITEM_LIMIT:,}: nothing was written (store large values elsewhere and keep"
                " a reference in the workflow, or use the S3 backend)",
                location=self.locate(key),
            )

    async def delete(self, key: Key, *, if_version: str | None = None) -> None:
        extra: dict[str, Any] = {}
        if if_version is not None:
            extra["ConditionExpression"] = "v = :expected AND attribute_exists(d)"
            extra["ExpressionAttributeValues"] = {":expected": {"S": if_version}}
        await self._call("delete_item", key, Key=self._item_key(key), **extra)
        self._deleted(key)

    async def list(self, namespace: str) -> dict[str, str]:
        found: dict[str, str] = {}
        start: dict[str, Any] | None = None
        while True:
            more: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            if self._page_size is not None:
                more["Limit"] = self._page_size
            page = await self._aws.call(
                "query",
                f"dynamodb://{self.table}/{namespace}/",
                TableName=self.table,
                KeyConditionExpression="ns = :ns",
                FilterExpression="attribute_exists(d)",  # not the placeholders of claims
                ProjectionExpression="#n, v",
                ExpressionAttributeNames={"#n": "name"},
                ExpressionAttributeValues={":ns": {"S": namespace}},
                ConsistentRead=True,
                **more,
            )
            for item in page.get("Items", ()):
                name, version = item.get("name", {}).get("S"), item.get("v", {}).get("S")
                if not isinstance(name, str) or not isinstance(version, str):
                    # Not an item asyncflow wrote: never read, never written; said, so that
                    # someone removes it.
                    logger.warning(
                        "an item in dynamodb://%s/%s/ is not one asyncflow wrote (%s); it is"
                        " skipped: remove it",
                        self.table,
                        namespace,
                        f"name {name!r}, no version" if isinstance(name, str) else "no name",
                    )
                    continue
                found[name[1:]] = version
            start = page.get("LastEvaluatedKey")
            if not start:
                return found

    # -- claims --------------------------------------------------------------------------------

    async def _take(self, key: Key, expected: str | None) -> Entry | bool | None:
        """Take the lease on ``key``: ``expected`` is the version it must be at (``None``:
        any, and a key with nothing stored is held with a placeholder item).

        Returns the entry as held, ``True`` for a placeholder, ``None`` if not taken.
        """
        version = secrets.token_hex(16)
        condition = _FREE_LEASE
        values: dict[str, Any] = {
            ":me": {"S": self._leases.owner},
            ":until": {"N": repr(self._leases.until())},
            ":now": {"N": repr(self._leases.clock())},
            ":new": {"S": version},
        }
        if expected is not None:
            condition = f"v = :expected AND attribute_exists(d) AND {_FREE_LEASE}"
            values[":expected"] = {"S": expected}
        try:
            response = await self._call(
                "update_item",
                key,
                Key=self._item_key(key),
                UpdateExpression="SET lo = :me, lu = :until, v = :new",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ConflictError:
            return None
        entry = _entry(response.get("Attributes"))
        if entry is None:
            self._leases.held[key] = Held(None, None, placeholder=version)
            return True
        self._leases.held[key] = Held(version, entry.data)
        return entry

    async def _release(self, key: Key) -> None:
        held = self._leases.held.pop(key, None)
        if held is None or held.released:
            return
        if held.placeholder is not None:
            extra = {
                "ConditionExpression": "v = :held AND attribute_not_exists(d)",
                "ExpressionAttributeValues": {":held": {"S": held.placeholder}},
            }
            await shielded(
                lambda: self._call("delete_item", key, Key=self._item_key(key), **extra),
                self.locate(key),
            )
        elif held.version is not None:
            version = held.version
            await shielded(
                lambda: self._call(
                    "update_item",
                    key,
                    Key=self._item_key(key),
                    UpdateExpression="REMOVE lo, lu",
                    ConditionExpression="v = :held",
                    ExpressionAttributeValues={":held": {"S": version}},
                ),
                self.locate(key),
            )


def _entry(item: dict[str, Any] | None) -> Entry | None:
    if not item or "d" not in item:
        return None  # nothing, or the placeholder of a claim
    return Entry(bytes(item["d"]["B"]), item["v"]["S"])
