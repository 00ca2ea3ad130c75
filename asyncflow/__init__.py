"""asyncflow: durable async workflows from a one-page Python script, with no server.

Workflows are ``async def`` functions replayed from the top on every invocation; side
effects, shared state and pauses are recorded in a backend, so a run behaves as if it had been
suspended and resumed. Works on asyncio and trio.
"""

from typing import TYPE_CHECKING, Any

from ._backend import Backend as Backend
from ._backend import Entry as Entry
from ._backend import Key as Key
from ._context import Context as Context
from ._exceptions import AsyncflowError as AsyncflowError
from ._exceptions import BackendError as BackendError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import ConflictError as ConflictError
from ._exceptions import DamagedRecordError as DamagedRecordError
from ._exceptions import EventCycleError as EventCycleError
from ._exceptions import NonDeterminismError as NonDeterminismError
from ._exceptions import RunNotFoundError as RunNotFoundError
from ._exceptions import SerializationError as SerializationError
from ._exceptions import SideEffectError as SideEffectError
from ._exceptions import UnknownTriggerError as UnknownTriggerError
from ._exceptions import UsageError as UsageError
from ._exceptions import WaitTimeout as WaitTimeout
from ._flow import Flow as Flow
from ._flow import setup as setup
from ._retry import Retry as Retry
from ._triggers import Trigger as Trigger
from ._triggers import cron_trigger as cron_trigger
from ._triggers import event_trigger as event_trigger
from ._triggers import every_trigger as every_trigger
from ._triggers import state_trigger as state_trigger

if TYPE_CHECKING:
    from ._backends._dynamodb import DynamoDBBackend as DynamoDBBackend
    from ._backends._file import FileBackend as FileBackend
    from ._backends._memory import MemoryBackend as MemoryBackend
    from ._backends._packs import PackedBackend as PackedBackend
    from ._backends._s3 import S3Backend as S3Backend
    from ._results import Run as Run
    from ._results import RunResult as RunResult
    from ._results import RunStatus as RunStatus
    from ._results import Step as Step

__version__ = "0.1.0"

_RESULTS = ("Run", "RunResult", "RunStatus", "Step")  # loaded by __getattr__

__all__ = [
    "AsyncflowError",
    "Backend",
    "BackendError",
    "ConfigError",
    "ConflictError",
    "Context",
    "DamagedRecordError",
    "DynamoDBBackend",
    "Entry",
    "EventCycleError",
    "FileBackend",
    "Flow",
    "Key",
    "MemoryBackend",
    "NonDeterminismError",
    "PackedBackend",
    "Retry",
    "Run",
    "RunNotFoundError",
    "RunResult",
    "RunStatus",
    "S3Backend",
    "SerializationError",
    "SideEffectError",
    "Step",
    "Trigger",
    "UnknownTriggerError",
    "UsageError",
    "WaitTimeout",
    "cron_trigger",
    "event_trigger",
    "every_trigger",
    "setup",
    "state_trigger",
]


def __getattr__(name: str) -> Any:
    # What an invocation reports loads with the first result (or the first look at these
    # names): their dataclasses cost `import asyncflow` a few ms.
    if name in _RESULTS:
        from . import _results

        value = globals()[name] = getattr(_results, name)
        return value
    # Backends load on first use (the registry in ``_backends`` says where each one lives): a
    # Lambda cold start that keeps its runs in S3 should not pay for the file backend's
    # imports, nor anyone for a backend they do not use.
    from ._backends import backend_class, by_class

    entry = by_class(name)
    if entry is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = backend_class(entry)
    value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The names __getattr__ loads on first use are listed before they are loaded.
    return sorted({*globals(), *__all__})


# Show the public names as asyncflow's own (in reprs, tracebacks and docs), as httpx does.
for _name in __all__:
    _obj = globals().get(_name)
    if getattr(_obj, "__module__", "").startswith("asyncflow."):
        _obj.__module__ = "asyncflow"
del _name, _obj
