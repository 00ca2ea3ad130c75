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

import anyio

from ._backend import Backend
from ._context import Context
from ._context import sideeffect as call_sideeffect
from ._exceptions import (
    AsyncflowError,
    ConfigError,
    ConflictError,
    DamagedRecordError,
    RunNotFoundError,
    UnknownTriggerError,
    UsageError,
)
from ._record import RunRecord, dumps, new_run_id, storable_name
from ._retry import Retry
from ._telemetry import observer
from ._triggers import Trigger, as_trigger
from ._validate import name as checked_name
from ._validate import positive_int, seconds

if TYPE_CHECKING:
    from datetime import datetime

    from ._results import Run, RunResult, RunStatus
    from ._store import Store
    from ._workflow import Workflow

__all__ = ["DEFAULT_BACKEND", "Flow", "setup"]

P = ParamSpec("P")
T = TypeVar("T")
W = TypeVar("W", bound=Callable[..., Awaitable[Any]])

#: Used when neither ``setup()`` nor ``ASYNCFLOW_BACKEND`` names a backend.
DEFAULT_BACKEND = "file:.asyncflow"


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
            raise ConfigError(f"ASYNCFLOW_BACKEND: {exc}") from exc.__cause__
    from ._backends import FORMS, open_url  # (with the first backend: a cold start's import)

    if not isinstance(spec, str):
        raise ConfigError(
            f"backend must be {FORMS} or an asyncflow.Backend instance, not {type(spec).__name__}"
        )
    return open_url(spec)


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
        positive_int(max_concurrency, "max_concurrency", error=ConfigError)
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
        self._checked: Backend | None = None  # the backend whose store layout was checked

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
            ConfigError: ``trigger`` is neither a non-empty string nor a Trigger.
        """

        if callable(trigger):
            raise UsageError("write @flow.workflow() with parentheses")

        def register(fn: W) -> W:
            from ._workflow import Workflow

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
            bound = as_trigger(name if trigger is None else trigger, name)
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
            limit = None
            if timeout is not None:
                limit = seconds(
                    timeout,
                    f"the timeout of side effect {name!r}",
                    error=ConfigError,
                    infinite=True,
                )

            @functools.wraps(fn)
            async def wrapper(c: Context, /, *args: P.args, **kwargs: P.kwargs) -> T:
                if not isinstance(c, Context):
                    raise UsageError(
                        f"side effect {name!r} must be called with the Context as its first"
                        f" argument, not {type(c).__name__}"
                    )
                return await call_sideeffect(  # type: ignore[no-any-return]
                    c, name, fn, args, kwargs, retry, limit
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
            if self._checked is not self.backend:
                # Once per backend object: a store gets packs once, and the runs a process
                # without packs stored meanwhile are read by packed ones all the same.
                from ._store import Store

                try:
                    await Store(self.backend).check_layout()
                except BaseException:
                    await self.backend.aclose()
                    raise
                self._checked = self.backend
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
    async def _stored(self) -> AsyncIterator[Store]:
        """The store, its backend open (made per use: ``backend`` and ``clock`` may be
        replaced between calls)."""
        from ._store import Store

        async with self:
            yield Store(self.backend, self.clock)

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
        from ._engine import create_runs, invoke
        from ._shard import as_shard

        share = as_shard(shard)
        new: list[RunRecord] = []
        if trigger is not None:
            new = create_runs(self.clock, self._bound(trigger), trigger, args)
        elif key is not None:
            raise UsageError("a key is given without a trigger")
        stop_at = None if time_limit is None else self.clock() + time_limit
        async with self._stored() as store:
            if key is not None:
                from ._manage import claim_key

                new = [r for r in new if await claim_key(store, r, key)]
            return await invoke(store, self._workflows, new, self.max_concurrency, stop_at, share)

    async def start(self, trigger: str, args: Any = None, *, key: str | None = None) -> list[str]:
        """Record one new run per workflow bound to ``trigger`` without executing it.

        The runs execute at the next :meth:`run`. Cheap: nothing else is replayed.

        Args:
            key: an idempotency key, as for :meth:`run`.

        Returns:
            The new runs' ids (with a key: the ids of the runs started for it, new or not).
        """
        from ._engine import create_runs
        from ._manage import claim_key

        records = create_runs(self.clock, self._bound(trigger), trigger, args)
        async with self._stored() as store:
            for record in records:
                if key is not None and not await claim_key(store, record, key):
                    continue
                try:
                    await store.create_run(record)
                except ConflictError:
                    if key is None:
                        raise
        return [r.run_id for r in records]

    async def start_many(
        self,
        trigger: str,
        args_list: Sequence[Any],
        *,
        keys: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Record many new runs at once, as :meth:`start` does for each item of ``args_list``,
        in the store's batches (much faster than one ``start`` after another).

        Every item is checked before anything is written: one that cannot be stored raises
        and nothing is stored. The runs execute at the next :meth:`run`.

        Args:
            trigger: the event that starts the runs (every workflow bound to it, per item).
            args_list: each run's args (JSON).
            keys: an idempotency key per item (``None`` for none), as for :meth:`start`: an
                item whose key started a run already starts nothing new and gives that run's
                id; items sharing a key start one run.

        Returns:
            The runs' ids, item by item in order (per item, one id per bound workflow, in the
            order the workflows were registered).

        Raises:
            SerializationError: an item's args cannot be stored as JSON; the error names its
                index (nothing was stored).
            UsageError: ``keys`` is not as long as ``args_list``, or a key is not usable.
            ConflictError: a new run's id was taken already (it names the items; the other
                runs are stored).
        """
        from ._engine import create_runs

        bound = self._bound(trigger)
        args_list = list(args_list)
        if keys is not None:
            keys = list(keys)
            if len(keys) != len(args_list):
                raise UsageError(
                    f"start_many got {len(keys)} keys for {len(args_list)} args: give one key"
                    " (or None) per item"
                )
            for i, key in enumerate(keys):
                if key is not None:
                    checked_name(key, f"the idempotency key of item {i}", error=UsageError)
                    storable_name(key, "idempotency key")
        items = [
            create_runs(
                self.clock, bound, trigger, args, f"item {i} of args_list for trigger {trigger!r}"
            )
            for i, args in enumerate(args_list)
        ]
        async with self._stored() as store:
            fresh: list[tuple[int, RunRecord]] = []  # (item, record) to store now
            if keys is None:
                fresh = [(i, r) for i, records in enumerate(items) for r in records]
            else:
                fresh = await _claim_keys(store, items, keys)
            stored = await store.create_runs([record for _, record in fresh])
            lost = [
                (i, record.run_id)
                for (i, record), outcome in zip(fresh, stored, strict=True)
                if isinstance(outcome, ConflictError) and (keys is None or keys[i] is None)
            ]
        if lost:
            # (A keyed run stored meanwhile by another caller is that key's run: not an error.)
            shown = ", ".join(f"item {i} (run {run_id})" for i, run_id in lost[:10])
            raise ConflictError(
                f"start_many: {len(lost)} new run{'' if len(lost) == 1 else 's'} found"
                f" {'its id' if len(lost) == 1 else 'their ids'} taken already and"
                f" {'was' if len(lost) == 1 else 'were'} not stored: {shown}"
                f"{' ...' if len(lost) > 10 else ''}; the other"
                f" {len(fresh) - len(lost)} runs were stored",
                location=store.where(lost[0][1]),
            )
        return [r.run_id for records in items for r in records]

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
        from ._engine import invoke

        stop_at = None if time_limit is None else self.clock() + time_limit
        async with self._stored() as store:
            await self._deliver(name, args)
            return await invoke(store, self._workflows, [], self.max_concurrency, stop_at)

    async def _deliver(self, name: str, args: Any, *, key: str | None = None) -> None:
        """Emit event ``name`` without advancing anything: the runs it starts are stored and
        the runs waiting for it woken, all due at the next invocation.

        ``key``: an idempotency key (an SQS message's id): the event delivered again with it
        starts and wakes nothing twice.
        """
        checked_name(name, "the event name", error=UsageError)
        storable_name(name, "event")
        from ._events import deliver

        args = json.loads(dumps(args, f"the args of event {name!r}"))
        async with self._stored() as store:
            event_id, again = new_run_id(), False
            if key is not None:
                from ._manage import claim_event_key

                recorded = await claim_event_key(store, name, key, event_id)
                # Delivered before (perhaps half-way, by a crashed invocation): once more.
                again, event_id = recorded != event_id, recorded
            due = await deliver(store, self._workflows, "event", name, args, event_id, again=again)
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

        async with self._stored() as store:
            await cancel(store, run_id)

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
        from ._engine import invoke
        from ._manage import reopen

        async with self._stored() as store:
            await reopen(store, run_id, self._workflows)
            return await invoke(store, self._workflows, [], self.max_concurrency)

    async def next_wakeup(self, *, shard: tuple[int, int] | None = None) -> datetime | None:
        """When the earliest durable timer (``c.sleep``, a ``wait_event`` timeout, a retry
        delay) is due, in UTC; ``None`` if no run sleeps. ``shard=(k, n)``: of that shard's
        runs only (what ``run(shard=(k, n))`` would advance).

        A scheduler can call the next invocation then. Runs paused otherwise (``pause_once``)
        are due at every invocation; runs waiting for an event, when it is emitted.
        """
        from datetime import datetime, timezone

        from ._shard import as_shard

        share = as_shard(shard)
        async with self._stored() as store:
            wake = await store.next_wakeup(share)
        return None if wake is None else datetime.fromtimestamp(wake, timezone.utc)

    # -- inspection ----------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> Run:
        """The run ``run_id`` as stored, with its steps and logs.

        Raises:
            RunNotFoundError: there is no such run.
        """
        from ._results import damaged_run

        if not _plausible_id(run_id):
            raise RunNotFoundError(run_id)  # no store could hold it: not one of ours
        async with self._stored() as store:
            try:
                found = await store.find_run(run_id)
                if found is not None:
                    return _run_of(*found, run_id)
            except DamagedRecordError as exc:
                return damaged_run(run_id, exc)
        raise RunNotFoundError(run_id)

    async def list_runs(self, status: RunStatus | Sequence[RunStatus] | None = None) -> list[Run]:
        """Every stored run (or those with ``status``), oldest first.

        A stored record that cannot be used is listed as a run of status ``"damaged"`` (its
        ``error`` says why), after the others; the file is left untouched.
        """
        from ._results import damaged_run

        wanted = {status} if isinstance(status, str) else set(status) if status else None
        async with self._stored() as store:
            stored = await store.all_runs()
        runs: dict[str, Run] = {}
        for run_id, record in stored.items():
            if isinstance(record, DamagedRecordError):
                runs[run_id] = damaged_run(run_id, record)
                continue
            try:
                runs[run_id] = _run_of(*record, run_id)
            except DamagedRecordError as exc:
                runs[run_id] = damaged_run(run_id, exc)
        found = [r for r in runs.values() if wanted is None or r.status in wanted]
        return sorted(found, key=lambda r: (r.status == "damaged", r.created_at, r.run_id))

    async def get_state(self, name: str, default: Any = None) -> Any:
        """The current value of shared state ``name`` (``default`` if never set)."""
        async with self._stored() as store:
            return await store.read_state(name, default)

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


def _run_of(data: bytes, location: str, run_id: str) -> Run:
    """The stored record ``data`` as a :class:`Run`; DamagedRecordError if it is not one."""
    from ._results import run_view

    record = RunRecord.decode(data, location, run_id)
    try:
        return run_view(record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a step it cannot show
        raise DamagedRecordError(
            f"{location} cannot be used: a step is damaged ({exc!r}). asyncflow leaves it"
            " untouched; restore it from a backup or move it away.",
            location=location,
        ) from None


async def deliver_event(flow: Flow, name: str, args: Any, *, key: str | None = None) -> None:
    """Emit event ``name`` without advancing anything (the package's route to
    :meth:`Flow._deliver`, for the Lambda handler's SQS records)."""
    await flow._deliver(name, args, key=key)


async def _claim_keys(
    store: Store,
    items: list[list[RunRecord]],
    keys: list[str | None],
) -> list[tuple[int, RunRecord]]:
    """Take the idempotency keys of :meth:`Flow.start_many`'s items (at most 64 at once);
    the ``(item, record)`` pairs still to store. A record whose key started a run already
    gets that run's id; items repeating a key share the first one's run."""
    from ._manage import claim_key

    first: dict[tuple[str, str], RunRecord] = {}
    claimed: list[tuple[int, RunRecord]] = []
    later: list[tuple[RunRecord, RunRecord]] = []  # (record, the first of its key)
    fresh: list[tuple[int, RunRecord]] = []
    for i, records in enumerate(items):
        key = keys[i]
        for record in records:
            if key is None:
                fresh.append((i, record))
            elif (record.workflow, key) in first:
                later.append((record, first[record.workflow, key]))
            else:
                first[record.workflow, key] = record
                claimed.append((i, record))
    limiter = anyio.CapacityLimiter(64)
    won: list[bool] = [False] * len(claimed)
    failures: list[AsyncflowError] = []

    async def one(n: int) -> None:
        i, record = claimed[n]
        async with limiter:
            try:
                won[n] = await claim_key(store, record, keys[i] or "")
            except AsyncflowError as exc:  # raised as itself below, not in a group
                failures.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(len(claimed)):
            tg.start_soon(one, n)
    if failures:
        raise failures[0]
    for record, original in later:
        record.run_id = original.run_id
    fresh += [pair for pair, new in zip(claimed, won, strict=True) if new]
    fresh.sort(key=lambda pair: pair[0])
    return fresh
