"""The Flow: a script's workflows, side effects and backend, and its entry points."""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ._backend import Backend, Entry, Key
from ._context import Context
from ._engine import ACTIVE, DONE, Workflow, create_runs, invoke, read_state
from ._exceptions import (
    ConfigError,
    ConflictError,
    DamagedRecordError,
    RunNotFoundError,
    UnknownTriggerError,
    UsageError,
)
from ._record import RunRecord, dumps, new_run_id, storable_name
from ._results import Run, RunResult, RunStatus
from ._retry import Retry, check_timeout
from ._telemetry import observer
from ._triggers import Trigger, as_trigger
from ._waits import WAITS, WaitIndex

if TYPE_CHECKING:
    from datetime import datetime

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

    def workflow(self, trigger: str | Trigger | None = None) -> Callable[[W], W]:
        """Register an ``async def f(c)`` or ``async def f(c, args)`` as a workflow.

        Use as ``@flow.workflow()`` (the trigger is the function's name) or
        ``@flow.workflow(trigger="name")``. Several workflows may share a trigger: each gets
        its own run. A name is an event: :meth:`run`, :meth:`emit` and ``c.event`` start it.
        Other triggers: :func:`asyncflow.state_trigger`, :func:`asyncflow.every_trigger`,
        :func:`asyncflow.cron_trigger`.

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
            if (
                trigger is not None
                and not isinstance(trigger, Trigger)
                and (not isinstance(trigger, str) or not trigger)
            ):
                raise UsageError(
                    f"the trigger of workflow {name!r} must be a non-empty string or a Trigger"
                )
            bound = as_trigger(trigger or name)
            self._workflows[name] = Workflow(
                name, bound.name, fn, len(params) == 2, bound.kind, bound.cron
            )
            return fn

        return register

    def sideeffect(
        self,
        _misuse: object = None,
        /,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Callable[
        [Callable[Concatenate[Context, P], Awaitable[T]]],
        Callable[Concatenate[Context, P], Awaitable[T]],
    ]:
        """Make ``async def f(c, *args, **kwargs)`` a side effect: run once, then replayed.

        The first time a run reaches a call, ``f`` executes and its return value is recorded
        (it must be JSON-serializable); replays return the recorded value without executing
        ``f``. If ``f`` raises, the workflow sees :class:`SideEffectError`, then and on every
        replay. ``f`` may use the context's primitives and other side effects, and pause.

        Args:
            retry: retry failed attempts as this :class:`asyncflow.Retry` says; each attempt
                and the last error are recorded. Default: one attempt.
            timeout: fail an attempt that takes longer than this many seconds with
                :class:`TimeoutError` (retried if ``retry`` retries it).

        Raises:
            UsageError: ``f`` is not ``async def`` or takes no Context parameter; or, at a
                call, the first argument is not the Context.
            ConfigError: ``retry`` is not a :class:`asyncflow.Retry` or ``timeout`` is not a
                positive number.
        """

        if _misuse is not None:
            raise UsageError("write @flow.sideeffect() with parentheses")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigError(f"retry= must be an asyncflow.Retry, not {type(retry).__name__}")

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
            limit = check_timeout(timeout, f"side effect {name!r}")

            @functools.wraps(fn)
            async def wrapper(c: Context, /, *args: P.args, **kwargs: P.kwargs) -> T:
                if not isinstance(c, Context):
                    raise UsageError(
                        f"side effect {name!r} must be called with the Context as its first"
                        f" argument, not {type(c).__name__}"
                    )
                return await c._sideeffect(  # type: ignore[no-any-return]
                    name, fn, args, kwargs, retry, limit
                )

            return wrapper

        return decorate

    @property
    def workflows(self) -> dict[str, str]:
        """The registered workflows: name → trigger (``name``, ``state:name``, ``every``,
        ``cron:expression``)."""
        return {w.name: str(Trigger(w.kind, w.trigger)) for w in self._workflows.values()}

    def _bound(self, trigger: str) -> list[Workflow]:
        events = [w for w in self._workflows.values() if w.kind == "event"]
        bound = [w for w in events if w.trigger == trigger]
        if not bound:
            raise UnknownTriggerError(trigger, sorted({w.trigger for w in events}))
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

    async def run(
        self,
        trigger: str | None = None,
        args: Any = None,
        *,
        key: str | None = None,
        time_limit: float | None = None,
        shard: tuple[int, int] | None = None,
    ) -> list[RunResult]:
        """One invocation: start new runs for ``trigger`` (if given) and resume every run that
        was due before this call, concurrently. Runs that events emitted meanwhile start or
        wake execute too, before it returns.

        Args:
            trigger: the name (event) whose workflows to start; ``None``: resume only.
            args: the new runs' args (JSON).
            key: an idempotency key: at most one run per workflow is ever started for it,
                however often and from however many processes this is called.
            time_limit: seconds (by the flow's clock) after which no further run is started;
                runs already started go on to their next pause or end. Runs not started stay
                due (new ones are stored) for the next invocation. ``None``: no limit.
            shard: ``(k, n)``: resume only the due runs of shard ``k`` of ``n`` (a run's shard
                is a stable hash of its id modulo ``n``), so that n invocations started together
                share the due runs without contending for them. Shard 0 also ticks the
                schedules (``every`` and ``cron`` workflows); the runs this call starts, and
                those events emitted meanwhile start or wake, are advanced here whatever their
                shard. ``None``: every due run.

        Returns:
            A result for every run this invocation advanced: new runs first, then resumed runs
            oldest first, then those that events started or woke. Runs another invocation
            holds at the moment are skipped.

        Raises:
            UnknownTriggerError: no workflow is bound to ``trigger`` (nothing was changed).
            SerializationError: ``args`` cannot be stored as JSON (nothing was changed).
            UsageError: ``shard`` is not a pair of integers ``0 <= k < n``.
            EventCycleError: events kept starting runs that emit events, round after round.
            BackendError: the backend failed or holds a damaged record (named).
        """
        from ._shard import as_shard

        share = as_shard(shard)
        new: list[RunRecord] = []
        if trigger is not None:
            new = create_runs(self.clock, self._bound(trigger), trigger, args)
        elif key is not None:
            raise UsageError("a key is given without a trigger")
        stop_at = None if time_limit is None else self.clock() + time_limit
        async with self._using() as backend:
            if key is not None:
                from ._manage import claim_key

                new = [r for r in new if await claim_key(backend, r, key)]
            return await invoke(
                backend, self.clock, self._workflows, new, self.max_concurrency, stop_at, share
            )

    async def start(self, trigger: str, args: Any = None, *, key: str | None = None) -> list[str]:
        """Record one new run per workflow bound to ``trigger`` without executing it.

        The runs execute at the next :meth:`run`. Cheap: nothing else is replayed.

        Args:
            key: an idempotency key, as for :meth:`run`.

        Returns:
            The new runs' ids (with a key: the ids of the runs started for it, new or not).
        """
        from ._manage import claim_key

        records = create_runs(self.clock, self._bound(trigger), trigger, args)
        async with self._using() as backend:
            for record in records:
                if key is not None and not await claim_key(backend, record, key):
                    continue
                try:
                    await backend.write((ACTIVE, record.run_id), record.encode(), if_absent=True)
                except ConflictError:
                    if key is None:
                        raise
        return [r.run_id for r in records]

    async def emit(
        self, name: str, args: Any = None, *, time_limit: float | None = None
    ) -> list[RunResult]:
        """Emit event ``name`` from outside any workflow; one invocation.

        Starts the workflows bound to ``name`` and wakes the runs waiting for it
        (``c.wait_event``), then advances them and every other due run, as :meth:`run` does.
        Emitting an event nobody listens to is not an error.

        Args:
            name: the event.
            args: the event's args (JSON).
            time_limit: as for :meth:`run`: no run is started past it. The event is delivered
                (its runs stored, its waiters woken) before any run starts.

        Raises:
            SerializationError: ``args`` cannot be stored as JSON (nothing was changed).
        """
        stop_at = None if time_limit is None else self.clock() + time_limit
        async with self._using() as backend:
            await self._deliver(name, args)
            return await invoke(
                backend, self.clock, self._workflows, [], self.max_concurrency, stop_at
            )

    async def _deliver(self, name: str, args: Any, *, key: str | None = None) -> None:
        """Emit event ``name`` without advancing anything: the runs it starts are stored and
        the runs waiting for it woken, all due at the next invocation.

        ``key``: an idempotency key (an SQS message's id): the event delivered again with it
        starts and wakes nothing twice.
        """
        if not isinstance(name, str) or not name:
            raise UsageError(f"the event name must be a non-empty string, not {name!r}")
        storable_name(name, "event")
        from ._events import deliver

        args = json.loads(dumps(args, f"the args of event {name!r}"))
        async with self._using() as backend:
            event_id, again = new_run_id(), False
            if key is not None:
                from ._manage import claim_event_key

                recorded = await claim_event_key(backend, name, key, event_id)
                # Delivered before (perhaps half-way, by a crashed invocation): once more.
                again, event_id = recorded != event_id, recorded
            due = await deliver(
                backend, self.clock, self._workflows, "event", name, args, event_id, again=again
            )
        observer().delivered(name, len(due))

    async def cancel(self, run_id: str) -> None:
        """Cancel a pending or paused run: it stops before its next step, for good.

        Its status becomes ``"cancelled"`` and it moves to the finished runs (see
        :meth:`get_run`). A run another invocation is executing at this moment stops at that
        invocation's next write of it (at most one more side effect runs).

        Raises:
            RunNotFoundError: there is no such run.
            UsageError: the run has finished already.
        """
        from ._manage import cancel

        async with self._using() as backend:
            await cancel(backend, self.clock, run_id)

    async def retry(self, run_id: str) -> list[RunResult]:
        """Execute a failed run again from its journal; one invocation.

        The side effect that failed executes again (a ``wait_event`` whose timeout failed the
        run waits again, with its timeout counted from now); the steps recorded before it
        replay.

        Raises:
            RunNotFoundError: there is no such run.
            UsageError: the run has not failed, or its workflow is not defined here (the run
                is left as it was).
        """
        from ._manage import reopen

        async with self._using() as backend:
            await reopen(backend, self.clock, run_id, self._workflows)
            return await invoke(backend, self.clock, self._workflows, [], self.max_concurrency)

    async def next_wakeup(self) -> datetime | None:
        """When the earliest durable timer (``c.sleep``, a ``wait_event`` timeout, a retry
        delay) is due, in UTC; ``None`` if no run sleeps.

        A scheduler can call the next invocation then. Runs paused otherwise (``pause_once``)
        are due at every invocation; runs waiting for an event, when it is emitted.
        """
        from datetime import datetime, timezone

        async with self._using() as backend:
            wake = WaitIndex(await backend.list(WAITS)).next_wakeup()
        return None if wake is None else datetime.fromtimestamp(wake, timezone.utc)

    # -- inspection ----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        """The run ``run_id`` as stored, with its steps and logs.

        Raises:
            RunNotFoundError: there is no such run.
        """
        if not _plausible_id(run_id):
            raise RunNotFoundError(run_id)  # no store could hold it: not one of ours
        async with self._using() as backend:
            # Finished again last: a run that finishes meanwhile is written to finished, then
            # removed from active, and could otherwise be missed in both.
            for namespace in (DONE, ACTIVE, DONE):
                key = (namespace, run_id)
                try:
                    entry = await backend.read(key)
                    if entry is not None:
                        return _run_of(entry.data, backend.locate(key), run_id)
                except DamagedRecordError as exc:
                    return Run._damaged(run_id, exc)
        raise RunNotFoundError(run_id)

    async def list_runs(self, status: RunStatus | Sequence[RunStatus] | None = None) -> list[Run]:
        """Every stored run (or those with ``status``), oldest first.

        A stored record that cannot be used is listed as a run of status ``"damaged"`` (its
        ``error`` says why), after the others; the file is left untouched.
        """
        wanted = {status} if isinstance(status, str) else set(status) if status else None
        async with self._using() as backend:
            runs: dict[str, Run] = {}
            # Finished last: a run caught between the two namespaces counts as finished.
            for namespace in (ACTIVE, DONE):
                keys = [(namespace, name) for name in await backend.list(namespace)]
                entries: list[Entry | DamagedRecordError | None]
                try:
                    entries = list(await backend.read_many(keys))
                except DamagedRecordError:  # rare: read them one by one to find which
                    entries = [await _read_or_damaged(backend, key) for key in keys]
                for key, entry in zip(keys, entries, strict=True):
                    if isinstance(entry, DamagedRecordError):
                        runs[key[1]] = Run._damaged(key[1], entry)
                    elif entry is not None:
                        try:
                            runs[key[1]] = _run_of(entry.data, backend.locate(key), key[1])
                        except DamagedRecordError as exc:
                            runs[key[1]] = Run._damaged(key[1], exc)
        found = [r for r in runs.values() if wanted is None or r.status in wanted]
        return sorted(found, key=lambda r: (r.status == "damaged", r.created_at, r.run_id))

    async def get_state(self, name: str, default: Any = None) -> Any:
        """The current value of shared state ``name`` (``default`` if never set)."""
        async with self._using() as backend:
            return await read_state(backend, name, default)

    # -- command line --------------------------------------------------------------------------

    def cli(self, argv: Sequence[str] | None = None) -> None:
        """Run the command line (``run``, ``start``, ``emit``, ``runs``, ``show``, ``cancel``,
        ``retry``, ``purge``, ``serve``) and exit with its status.

        See ``python your_script.py --help``.
        """
        from ._cli import main

        raise SystemExit(main(self, argv))


def _plausible_id(run_id: object) -> bool:
    """Whether ``run_id`` could name a stored run: ids are short text (asyncflow's are 20
    hexadecimal digits), and no store can hold a name UTF-8 cannot encode."""
    if not isinstance(run_id, str) or not run_id or len(run_id) > 200:
        return False
    try:
        run_id.encode()
    except UnicodeEncodeError:
        return False
    return True


async def _read_or_damaged(backend: Backend, key: Key) -> Entry | DamagedRecordError | None:
    try:
        return await backend.read(key)
    except DamagedRecordError as exc:
        return exc


def _run_of(data: bytes, location: str, run_id: str) -> Run:
    """The stored record ``data`` as a :class:`Run`; DamagedRecordError if it is not one."""
    record = RunRecord.decode(data, location, run_id)
    try:
        return Run._of(record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a step it cannot show
        raise DamagedRecordError(
            f"{location} cannot be used: a step is damaged ({exc!r}). asyncflow leaves it"
            " untouched; restore it from a backup or move it away.",
            location=location,
        ) from None
