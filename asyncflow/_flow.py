"""The Flow: a script's workflows, side effects and backend, and its entry points."""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._backend import Backend
from ._context import Context
from ._engine import ACTIVE, DONE, Workflow, create_runs, invoke, read_state
from ._exceptions import ConfigError, RunNotFoundError, UnknownTriggerError, UsageError
from ._record import RunRecord
from ._results import Run, RunResult, RunStatus

__all__ = ["DEFAULT_BACKEND", "Flow", "setup"]

P = ParamSpec("P")
T = TypeVar("T")
W = TypeVar("W", bound=Callable[..., Awaitable[Any]])

#: Used when neither ``setup()`` nor ``ASYNCFLOW_BACKEND`` names a backend.
DEFAULT_BACKEND = "file:.asyncflow"
_FORMS = (
    "'memory:', 'file:<folder>', 's3://<bucket>/<prefix>', 'dynamodb://<table>'"
    " or an asyncflow.Backend instance"
)


def setup(
    backend: str | Backend | None = None,
    *,
    max_concurrency: int = 1000,
    clock: Callable[[], float] | None = None,
) -> Flow:
    """Create a :class:`Flow`: the place a script registers its workflows.

    Args:
        backend: where runs and state are kept: ``"memory:"``, ``"file:<folder>"``,
            ``"s3://<bucket>/<prefix>"``, ``"dynamodb://<table>"`` or a :class:`Backend`.
            Default: the ``ASYNCFLOW_BACKEND`` environment variable if set, else
            ``"file:.asyncflow"`` (a folder in the working directory).
        max_concurrency: how many runs one invocation advances at once. Runs mostly wait
            (on their side effects' I/O, on storage), so many at once is what makes an
            invocation over thousands of runs fast; lower it if your side effects must not
            all call out at the same time.
        clock: returns the current time in seconds since the epoch (default
            :func:`time.time`); :class:`asyncflow.testing.MockClock` controls it in tests.

    Raises:
        ConfigError: the backend or a setting cannot be used.
    """
    return Flow(backend, max_concurrency=max_concurrency, clock=clock)


def open_backend(spec: str | Backend | None) -> Backend:
    """Build the backend a URL names (``None``: environment, then the default)."""
    if isinstance(spec, Backend):
        return spec
    if spec is None:
        from_env = os.environ.get("ASYNCFLOW_BACKEND")
        if not from_env:
            return open_backend(DEFAULT_BACKEND)
        try:
            return open_backend(from_env)
        except ConfigError as exc:
            raise ConfigError(f"ASYNCFLOW_BACKEND: {exc}") from None
    if not isinstance(spec, str):
        raise ConfigError(f"backend must be {_FORMS}, not {type(spec).__name__}")
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "memory" and rest in ("", "//"):
        from ._backends._memory import MemoryBackend

        return MemoryBackend()
    if sep and scheme == "file":
        if rest.startswith("//"):  # file:///abs/path
            rest = rest[2:]
        if not rest:
            raise ConfigError(f"backend {spec!r} names no folder: use 'file:<folder>'")
        from ._backends._file import FileBackend

        return FileBackend(rest)
    if sep and scheme == "s3":
        bucket, _, prefix = rest.removeprefix("//").partition("/")
        if not rest.startswith("//") or not bucket:
            raise ConfigError(f"backend {spec!r} names no bucket: use 's3://<bucket>/<prefix>'")
        from ._backends._s3 import S3Backend

        return S3Backend(bucket, prefix)
    if sep and scheme == "dynamodb":
        table = rest.removeprefix("//")
        if not rest.startswith("//") or not table or "/" in table:
            raise ConfigError(f"backend {spec!r} names no table: use 'dynamodb://<table>'")
        from ._backends._dynamodb import DynamoDBBackend

        return DynamoDBBackend(table)
    raise ConfigError(f"unknown backend {spec!r}: use {_FORMS}")


class Flow:
    """A set of workflows with the backend that keeps their runs. Made by :func:`setup`.

    Use ``async with flow:`` to keep the backend open across several calls (in a web app's
    lifespan, for instance); :meth:`run` and the other methods open and close it themselves
    when it is not.
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        max_concurrency: int = 1000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ConfigError("max_concurrency must be a positive integer")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self._backend: Backend | None = None
        self._backend_error: ConfigError | None = None
        if backend is None:
            # A bad ASYNCFLOW_BACKEND is reported when the backend is first needed, so that a
            # script can still be given another one (``--backend``) or print its help.
            try:
                self._backend = open_backend(None)
            except ConfigError as exc:
                self._backend_error = exc
        else:
            self._backend = open_backend(backend)
        self.max_concurrency = max_concurrency
        self.clock = clock or time.time
        self._workflows: dict[str, Workflow] = {}
        self._opened = 0

    def __repr__(self) -> str:
        backend = self._backend or "(invalid)"
        return f"<Flow backend={backend!r} workflows={list(self._workflows)!r}>"

    @property
    def backend(self) -> Backend:
        """The backend keeping this flow's runs and state.

        Raises:
            ConfigError: ``ASYNCFLOW_BACKEND`` names no usable backend.
        """
        if self._backend is None:
            assert self._backend_error is not None
            raise self._backend_error
        return self._backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        self._backend = backend

    # -- registration --------------------------------------------------------------------------

    def workflow(self, trigger: str | None = None) -> Callable[[W], W]:
        """Register an ``async def f(c)`` or ``async def f(c, args)`` as a workflow.

        Use as ``@flow.workflow()`` (the trigger is the function's name) or
        ``@flow.workflow(trigger="name")``. Several workflows may share a trigger: each gets
        its own run.

        Raises:
            UsageError: the function is not ``async def``, has another signature, or a workflow
                of the same name is already registered.
        """

        if callable(trigger):
            raise UsageError("write @flow.workflow() with parentheses")

        def register(fn: W) -> W:
            name = getattr(fn, "__name__", repr(fn))
            func: Any = fn  # (keeps mypy from narrowing W away in the check below)
            if not inspect.iscoroutinefunction(func):
                raise UsageError(f"workflow {name!r} must be an async def function")
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(params) not in (1, 2):
                raise UsageError(
                    f"workflow {name!r} must take (c) or (c, args), not {len(params)} parameters"
                )
            if name in self._workflows:
                raise UsageError(f"a workflow named {name!r} is already registered")
            if trigger is not None and (not isinstance(trigger, str) or not trigger):
                raise UsageError(f"the trigger of workflow {name!r} must be a non-empty string")
            self._workflows[name] = Workflow(name, trigger or name, fn, len(params) == 2)
            return fn

        return register

    def sideeffect(
        self, _misuse: object = None, /
    ) -> Callable[
        [Callable[Concatenate[Context, P], Awaitable[T]]],
        Callable[Concatenate[Context, P], Awaitable[T]],
    ]:
        """Make ``async def f(c, *args, **kwargs)`` a side effect: run once, then replayed.

        The first time a run reaches a call, ``f`` executes and its return value is recorded
        (it must be JSON-serializable); replays return the recorded value without executing
        ``f``. If ``f`` raises, the workflow sees :class:`SideEffectError`, then and on every
        replay. ``f`` may use the context's primitives and other side effects, and pause.

        Raises:
            UsageError: ``f`` is not ``async def`` or takes no Context parameter; or, at a
                call, the first argument is not the Context.
        """

        if _misuse is not None:
            raise UsageError("write @flow.sideeffect() with parentheses")

        def decorate(
            fn: Callable[Concatenate[Context, P], Awaitable[T]],
        ) -> Callable[Concatenate[Context, P], Awaitable[T]]:
            name = getattr(fn, "__qualname__", repr(fn))
            if not inspect.iscoroutinefunction(fn):
                raise UsageError(f"side effect {name!r} must be an async def function")
            params = list(inspect.signature(fn).parameters.values())
            if not params or params[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            ):
                raise UsageError(f"side effect {name!r} must take the Context as first parameter")

            @functools.wraps(fn)
            async def wrapper(c: Context, /, *args: P.args, **kwargs: P.kwargs) -> T:
                if not isinstance(c, Context):
                    raise UsageError(
                        f"side effect {name!r} must be called with the Context as its first"
                        f" argument, not {type(c).__name__}"
                    )
                return await c._sideeffect(name, fn, args, kwargs)  # type: ignore[no-any-return]

            return wrapper

        return decorate

    @property
    def workflows(self) -> dict[str, str]:
        """The registered workflows: name → trigger."""
        return {w.name: w.trigger for w in self._workflows.values()}

    def _bound(self, trigger: str) -> list[Workflow]:
        bound = [w for w in self._workflows.values() if w.trigger == trigger]
        if not bound:
            raise UnknownTriggerError(
                trigger, sorted({w.trigger for w in self._workflows.values()})
            )
        return bound

    # -- backend lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Flow:
        if not self._opened:
            await self.backend.open()
        self._opened += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._opened -= 1
        if not self._opened:
            await self.backend.aclose()

    @asynccontextmanager
    async def _using(self) -> AsyncIterator[Backend]:
        async with self:
            yield self.backend

    # -- invocations ---------------------------------------------------------------------------

    async def run(self, trigger: str | None = None, args: Any = None) -> list[RunResult]:
        """One invocation: start new runs for ``trigger`` (if given) and resume every run that
        was due before this call, concurrently.

        Returns:
            A result for every run this invocation advanced: new runs first, then resumed runs
            oldest first. Runs another invocation holds at the moment are skipped.

        Raises:
            UnknownTriggerError: no workflow is bound to ``trigger`` (nothing was changed).
            SerializationError: ``args`` cannot be stored as JSON (nothing was changed).
            BackendError: the backend failed or holds a damaged record (named).
        """
        new: list[RunRecord] = []
        if trigger is not None:
            new = create_runs(self.clock, self._bound(trigger), trigger, args)
        async with self._using() as backend:
            return await invoke(backend, self.clock, self._workflows, new, self.max_concurrency)

    async def start(self, trigger: str, args: Any = None) -> list[str]:
        """Record one new run per workflow bound to ``trigger`` without executing it.

        The runs execute at the next :meth:`run`. Cheap: nothing else is replayed.

        Returns:
            The new runs' ids.
        """
        records = create_runs(self.clock, self._bound(trigger), trigger, args)
        async with self._using() as backend:
            for record in records:
                await backend.write((ACTIVE, record.run_id), record.encode(), if_absent=True)
        return [r.run_id for r in records]

    # -- inspection ----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        """The run ``run_id`` as stored, with its steps and logs.

        Raises:
            RunNotFoundError: there is no such run.
        """
        async with self._using() as backend:
            for namespace in (DONE, ACTIVE):
                key = (namespace, run_id)
                entry = await backend.read(key)
                if entry is not None:
                    return Run._of(RunRecord.decode(entry.data, backend.locate(key)))
        raise RunNotFoundError(run_id)

    async def list_runs(self, status: RunStatus | Sequence[RunStatus] | None = None) -> list[Run]:
        """Every stored run (or those with ``status``), oldest first."""
        wanted = {status} if isinstance(status, str) else set(status) if status else None
        async with self._using() as backend:
            runs: dict[str, Run] = {}
            # Finished last: a run caught between the two namespaces counts as finished.
            for namespace in (ACTIVE, DONE):
                keys = [(namespace, name) for name in await backend.list(namespace)]
                for key, entry in zip(keys, await backend.read_many(keys), strict=True):
                    if entry is not None:
                        record = RunRecord.decode(entry.data, backend.locate(key))
                        runs[record.run_id] = Run._of(record)
        found = [r for r in runs.values() if wanted is None or r.status in wanted]
        return sorted(found, key=lambda r: (r.created_at, r.run_id))

    async def get_state(self, name: str, default: Any = None) -> Any:
        """The current value of shared state ``name`` (``default`` if never set)."""
        async with self._using() as backend:
            return await read_state(backend, name, default)

    # -- command line --------------------------------------------------------------------------

    def cli(self, argv: Sequence[str] | None = None) -> None:
        """Run the command line (``run``, ``runs``, ``show``) and exit with its status.

        See ``python your_script.py --help``.
        """
        from ._cli import main

        raise SystemExit(main(self, argv))
