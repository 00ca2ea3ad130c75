"""Checks of the numbers, durations and names given to asyncflow, and the rule that says which
error a bad one raises.

The rule: **settings raise** :class:`ConfigError`, **calls raise** :class:`UsageError`.

- A *setting* is fixed before any run executes, once for the flow, its backend or its
  process: the arguments of ``setup()``/``Flow()``, of a backend (its class or its URL), of
  ``Retry()``, of the trigger functions, of ``@flow.workflow(trigger=...)`` and
  ``@flow.sideeffect(retry=..., timeout=...)`` (a side effect's timeout is a setting of that
  side effect, as the ``Retry`` beside it is), of ``asgi.app()``, ``asgi.lifespan()``,
  ``aws_lambda.handler()`` and ``serve``; an environment variable (``ASYNCFLOW_BACKEND``,
  ``ASYNCFLOW_TOKEN``, the AWS region); a command-line option (``--backend``, ``--loop``,
  ``serve``'s); and the optional packages a setting needs (a missing extra). What must change
  is the configuration, wherever it is written.
- A *call* is one operation at run time: the arguments of a :class:`Flow` method that acts on
  runs (``run``, ``start``, ``emit``, ``get_run``, ``cancel``, ``retry``...), of a
  :class:`Context` primitive (``gather(limit=...)``, ``sleep(...)``,
  ``wait_event(timeout=...)``, state and event names...), and the command line's positional
  arguments and ``--key`` that stand for them. Also a :class:`UsageError`, whatever the values:
  the API used the wrong way (a workflow that is not ``async def``, a decorator without its
  parentheses, a primitive outside its run or from another task, a backend used before it is
  opened).

Each check takes the error to raise (``error=``), so that every call site says which of the
two it is; the messages name the thing at fault and what was given.
"""

from __future__ import annotations

import math

from ._exceptions import ConfigError, UsageError

__all__ = ["name", "number", "positive_int", "seconds"]

Error = type[ConfigError] | type[UsageError]


def positive_int(value: object, what: str, *, error: Error) -> int:
    """``value`` if it is an integer of at least 1 (not a bool), else ``error`` naming
    ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{what} must be a positive integer, not {value!r}")
    return value


def number(
    value: object,
    what: str,
    *,
    error: Error,
    low: float = -math.inf,
    high: float = math.inf,
    infinite: bool = False,
) -> float:
    """``value`` as a float if it is a number (not a bool, not NaN) from ``low`` to ``high``,
    infinite only if ``infinite``; else ``error`` naming ``what``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if ok and math.isinf(value) and not infinite:  # type: ignore[arg-type]
        ok = False
    if not ok or not low <= value <= high:  # type: ignore[operator]
        bound = f"from {low} to {high}" if high != math.inf else f"at least {low}"
        raise error(f"{what} must be a number {bound}, not {value!r}")
    return float(value)  # type: ignore[arg-type]


def seconds(
    value: object, what: str, *, error: Error, zero: bool = False, infinite: bool = False
) -> float:
    """``value`` as a duration in seconds: a number above 0 (``zero``: at least 0), finite
    unless ``infinite``; else ``error`` naming ``what``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or (value < 0 if zero else value <= 0)
        or (math.isinf(value) and not infinite)
    ):
        kind = "a finite" if not infinite else "a"
        sign = ">= 0" if zero else "> 0"
        raise error(f"{what} must be {kind} number of seconds {sign}, not {value!r}")
    return float(value)


def name(value: object, what: str, *, error: Error) -> str:
    """``value`` if it is a non-empty string, else ``error`` naming ``what``."""
    if not isinstance(value, str) or not value:
        raise error(f"{what} must be a non-empty string, not {value!r}")
    return value
