"""The HTTP messages that `_http` (the API's rules) and `_dashboard` (its pages) both speak.

Kept apart from `_http` so that the dashboard, which `_http` routes to, needs nothing back from
it: imports run one way, `_http` -> `_dashboard` -> `_wire`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import AsyncflowError

__all__ = [
    "SESSION_COOKIE",
    "BadRequest",
    "MethodNotAllowed",
    "Request",
    "Response",
    "check_method",
    "cookie",
    "same_origin",
]


class BadRequest(AsyncflowError):
    """A request this API refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """An HTTP request, whatever carried it. ``headers`` have lower-case names."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """What to answer: a status and a JSON-serializable body (or, for the dashboard's pages
    and assets, the bytes of a ``content_type`` body)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        # (backslashreplace: a lone surrogate a client sent, quoted back, stays an escape)
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8", "backslashreplace")


#: The name of the dashboard's session cookie.
SESSION_COOKIE = "asyncflow_session"


def cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or ``None``."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (if a browser sent one) names the host it was sent to.

    Browsers send ``Origin`` with every POST; a request from another site's page names that
    site. Clients that are not browsers send none, and are not refused for it.
    """
    if request.method.upper() in ("GET", "HEAD"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    _, sep, netloc = origin.partition("://")
    return bool(sep) and netloc == host


class MethodNotAllowed(BadRequest):
    """405: ``allowed`` are the methods the route takes (for the ``Allow`` header)."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(405, f"method not allowed: use {' or '.join(allowed)}")
        self.allowed = allowed


def check_method(method: str, *allowed: str) -> None:
    """Raise :class:`MethodNotAllowed` unless ``method`` is one of ``allowed``."""
    if method not in allowed:
        raise MethodNotAllowed(allowed)
