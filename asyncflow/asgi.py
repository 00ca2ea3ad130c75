"""Serve a flow over HTTP as a plain ASGI application: ``app = asyncflow.asgi.app(flow)``.

No web framework needed: run it with any ASGI server (``flow.cli()`` has ``serve``, on
uvicorn), or mount it in a Starlette or FastAPI application. Routes (JSON in and out):

- ``POST /runs`` (or ``POST /``): ``{"trigger": ..., "args": ...}``; runs it now (and every
  due run) and answers with the results (a body without a trigger only resumes);
- ``POST /start``: records new runs without running anything; answers ``{"run_ids": [...]}``;
- ``POST /resume``: resumes due runs; answers with the results;
- ``GET /runs`` (``?status=paused``, repeatable or comma-separated) and ``GET /runs/{run_id}``;
- ``POST /runs/{run_id}/cancel`` and ``POST /runs/{run_id}/retry``: cancel a waiting run,
  execute a failed one again;
- ``GET /healthz``: no token needed;
- ``GET /``: the web dashboard (a login form when a token is set; see the README).

Bad requests get 400, a missing token 401, unknown runs and routes 404, wrong methods 405,
a body that does not arrive in time 408, bodies over the size limit 413, anything unexpected
500 with an error id (details in the log). The route, token and method are checked before a
byte of the body is read, and the connection is closed after those answers: a client without
the token cannot make the server hold its body.

Mounted in a host application (Starlette, FastAPI), the mounted app's own lifespan never runs:
give the host :func:`lifespan` (``lifespan=asyncflow.asgi.lifespan(flow, resume_every=60)``),
which keeps the backend open and resumes due runs in the background.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio

from ._exceptions import ConfigError, UsageError
from ._flow import Flow
from ._http import MAX_BODY_SIZE, Api, Request, Response
from ._validate import seconds

__all__ = ["ASGIApp", "Lifespan", "app", "lifespan"]

#: Default seconds a client has to send its whole request body (else 408).
BODY_TIMEOUT = 30.0

logger = logging.getLogger("asyncflow")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def app(
    flow: Flow,
    *,
    token: str | None = None,
    max_body_size: int = MAX_BODY_SIZE,
    resume_every: float | None = None,
    body_timeout: float = BODY_TIMEOUT,
) -> ASGIApp:
    """An ASGI application serving ``flow``.

    Under a server that runs the ASGI lifespan, the flow is entered (``async with flow``) from
    startup to shutdown. Mounted inside another application (whose server runs only the host's
    lifespan), give the host :func:`lifespan` instead; without it, each request opens and
    closes the backend, and ``resume_every`` cannot take effect (a warning is logged at the
    first request).

    Args:
        flow: the flow to serve.
        token: if given, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.
        max_body_size: the largest request body accepted, in bytes (else 413).
        resume_every: if given, seconds between resumptions of the due runs, done in the
            background from lifespan startup to shutdown.
        body_timeout: seconds a client has to send its whole body once its request's headers
            passed the checks (else 408 and the connection is closed).

    Raises:
        ConfigError: a setting that cannot work.
    """
    _check_resume_every(resume_every)
    timeout = seconds(body_timeout, "body_timeout", error=ConfigError)
    api = Api(flow, token=token, max_body_size=max_body_size)
    return ASGIApp(api, resume_every, timeout)


def lifespan(flow: Flow, *, resume_every: float | None = None) -> Lifespan:
    """The flow's lifespan for a host application that mounts :func:`app`.

    A mounted application's own lifespan is never run (Starlette and FastAPI run only the
    host's), so the host enters this one::

        app = FastAPI(lifespan=asyncflow.asgi.lifespan(flow, resume_every=60))
        app.mount("/flow", asyncflow.asgi.app(flow))

    or, inside a lifespan of its own, ``async with asyncflow.asgi.lifespan(flow, ...):``.
    While it is entered the flow is too (the backend stays open) and, with ``resume_every``,
    the due runs are resumed every that many seconds in the background.

    Raises:
        ConfigError: ``resume_every`` is not a positive number of seconds.
    """
    _check_resume_every(resume_every)
    return Lifespan(flow, resume_every)


def _check_resume_every(resume_every: float | None) -> None:
    if resume_every is not None:
        seconds(resume_every, "resume_every", error=ConfigError, infinite=True)


class Lifespan:
    """What :func:`lifespan` returns: an async context manager, and a host application's
    ``lifespan=`` callable (called with the application, it returns a fresh one)."""

    def __init__(self, flow: Flow, resume_every: float | None) -> None:
        self.flow = flow
        self.resume_every = resume_every
        self._stack: AsyncExitStack | None = None
        self._cancel: anyio.CancelScope | None = None

    def __call__(self, app: object) -> Lifespan:
        return Lifespan(self.flow, self.resume_every)

    async def __aenter__(self) -> None:
        if self._stack is not None:
            raise UsageError("this lifespan is entered already")
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.flow)
            tg = await stack.enter_async_context(anyio.create_task_group())
            if self.resume_every is not None:
                tg.start_soon(_resume_periodically, self.flow, self.resume_every)
            self._cancel = tg.cancel_scope
            self._stack = stack.pop_all()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, cancel = self._stack, self._cancel
        self._stack = self._cancel = None
        if cancel is not None:
            cancel.cancel()
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)


class ASGIApp:
    """The application :func:`app` returns."""

    def __init__(
        self, api: Api, resume_every: float | None, body_timeout: float = BODY_TIMEOUT
    ) -> None:
        self._api = api
        self._resume_every = resume_every
        self._body_timeout = body_timeout
        self._lifespan_ran = False
        self._warned = False

    @property
    def flow(self) -> Flow:
        return self._api.flow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._resume_every is not None and not self._lifespan_ran and not self._warned:
            self._warned = True
            logger.warning(
                "asyncflow.asgi.app(resume_every=%s) resumes nothing: its lifespan did not run"
                " (mounted in another application?); give the host application"
                " asyncflow.asgi.lifespan(flow, resume_every=%s) instead",
                self._resume_every,
                self._resume_every,
            )
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        request = Request(
            method=scope["method"],
            path=_route_path(scope),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
        )
        response = await self._answer(request, receive)
        if response is None:
            return  # the client is gone before it sent its request: nothing to do
        if response.status in (401, 408, 413):
            # The rest of the body is not read: close instead of keeping the connection.
            response = dataclasses.replace(
                response, headers={**response.headers, "connection": "close"}
            )
        data = response.encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(data)).encode()),
                    *((k.encode(), v.encode()) for k, v in response.headers.items()),
                ],
            }
        )
        if scope["method"] == "HEAD":
            data = b""
        await send({"type": "http.response.body", "body": data})

    async def _answer(self, request: Request, receive: Receive) -> Response | None:
        """The response to ``request`` (whose body is still to be received); ``None`` if
        the client left before it sent the whole body."""
        # Route, token and method first: nothing of the body is read for a request refused.
        early = self._api.gate(request)
        if early is not None:
            return early
        limit = self._api.max_body_size
        try:
            with anyio.fail_after(self._body_timeout):
                body = await _read_body(receive, request.headers, limit)
        except _Disconnected:
            return None
        except TimeoutError:
            error = f"the request body did not arrive within {self._body_timeout:g} seconds"
            return Response(408, {"error": error})
        if body is None:
            return Response(413, {"error": f"the request body exceeds {limit} bytes"})
        return await self._api.handle(dataclasses.replace(request, body=body))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        self._lifespan_ran = True
        try:
            async with Lifespan(self.flow, self._resume_every):
                await send({"type": "lifespan.startup.complete"})
                message = await receive()  # lifespan.shutdown
        except Exception as exc:
            failed = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            logger.error("asyncflow %s failed: %s", failed, exc, exc_info=exc)
            await send({"type": f"lifespan.{failed}.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def _resume_periodically(flow: Flow, period: float) -> None:
    while True:
        await anyio.sleep(period)
        try:
            await flow.run()  # (the invocation logs what it advanced)
        except Exception as exc:  # keep serving; the next period tries again
            logger.error("resuming due runs failed: %s", exc, exc_info=exc)


class _Disconnected(Exception):
    """The client left before sending its whole request (never leaves this module)."""


async def _read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it is known to exceed ``limit``.

    Raises:
        _Disconnected: the client left before sending all of it.
    """
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _route_path(scope: Scope) -> str:
    # Mounted under a prefix (Starlette's Mount, a server's --root-path), ``path`` still holds
    # the full path and ``root_path`` the prefix (ASGI spec); the route is what follows.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path
