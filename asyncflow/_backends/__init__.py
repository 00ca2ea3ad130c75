"""The backends asyncflow ships, by URL scheme: the one list that ``setup()``/``--backend``
URLs, ``asyncflow.S3Backend`` and the like, and the CLI's help all read.

As anyio picks its backends by name, a backend's module is imported only when it is asked for:
a Lambda cold start that keeps its runs in S3 does not pay for the file backend's imports, and
nobody pays for aiobotocore unless they use S3 or DynamoDB. This module itself imports nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._exceptions import ConfigError

if TYPE_CHECKING:
    from .._backend import Backend

__all__ = ["BACKENDS", "FORMS", "WRAPPERS", "Registered", "backend_class", "by_class", "open_url"]


@dataclass(frozen=True)
class Registered:
    """One backend asyncflow ships."""

    scheme: str  # what a URL starts with, before the ":"
    form: str  # the URL's form, for help and messages
    module: str  # relative to this package
    name: str  # the class, exported as ``asyncflow.<name>``
    extra: str | None = None  # the package extra that installs what the module imports
    needs: tuple[str, ...] = ()  # the top-level modules that extra brings


_AWS = ("aiobotocore", "botocore")
BACKENDS = (
    Registered("memory", "memory:", "._memory", "MemoryBackend"),
    Registered("file", "file:<folder>", "._file", "FileBackend"),
    Registered("s3", "s3://<bucket>/<prefix>", "._s3", "S3Backend", "aws", _AWS),
    Registered("dynamodb", "dynamodb://<table>", "._dynamodb", "DynamoDBBackend", "aws", _AWS),
)
#: Backends that wrap another, built from the other's URL with a query (``?packs=256``).
WRAPPERS = (Registered("", "<url>?packs=<P>", "._packs", "PackedBackend"),)
_BY_SCHEME = {b.scheme: b for b in BACKENDS}

#: The URL forms, as help and error messages list them.
FORMS = ", ".join(f"'{b.form}'" for b in (*BACKENDS, *WRAPPERS))


def by_class(name: str) -> Registered | None:
    """The registered backend exported as ``asyncflow.<name>``, if there is one."""
    return next((b for b in (*BACKENDS, *WRAPPERS) if b.name == name), None)


def backend_class(entry: Registered) -> type[Backend]:
    """Import the backend's module (on first use) and return its class.

    Raises:
        ConfigError: what the module needs is not installed; the message names the extra.
    """
    try:
        module = importlib.import_module(entry.module, __name__)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in entry.needs:
            raise
        raise ConfigError(
            f"the {entry.form} backend needs {missing}, which is not installed:"
            f" pip install 'asyncflow-durable[{entry.extra}]'"
        ) from exc
    cls: type[Backend] = getattr(module, entry.name)
    return cls


def open_url(url: str) -> Backend:
    """Build the backend ``url`` names.

    Raises:
        ConfigError: no backend has this URL's scheme, the URL is not of its form, or the
            backend's extra is not installed.
    """
    base, _, query = url.rpartition("?packs=")
    if base and query.isdigit() and query.isascii():
        # The runs of this store are kept in packs (asyncflow/_backends/_packs.py).
        packed = backend_class(WRAPPERS[0])
        return packed(open_url(base), packs=int(query))  # type: ignore[call-arg]
    scheme, sep, _ = url.partition(":")
    entry = _BY_SCHEME.get(scheme) if sep else None
    if entry is None:
        raise ConfigError(f"unknown backend {url!r}: use {FORMS} or an asyncflow.Backend instance")
    return backend_class(entry).from_url(url)
