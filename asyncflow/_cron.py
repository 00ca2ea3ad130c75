"""Cron expressions: five fields, evaluated in UTC, searched backwards for the latest tick.

Written here rather than taken from a library: asyncflow needs one question answered ("the
latest tick in this interval?") and every import costs a Lambda cold start.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from ._exceptions import ConfigError

__all__ = ["Cron"]

# name, lowest, highest value of each field
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),  # 0 and 7 are both Sunday
)


class Cron:
    """A parsed five-field cron expression (``minute hour day-of-month month day-of-week``).

    Each field is ``*``, a number, a range ``a-b``, any of these with a step (``*/10``,
    ``1-30/2``, ``5/15``), or a comma-separated list of them. As in cron, when both day fields
    are restricted a day matches if either does.
    """

    __slots__ = (
        "days",
        "dom_any",
        "dow_any",
        "expression",
        "hours",
        "minutes",
        "months",
        "weekdays",
    )

    def __init__(self, expression: str) -> None:
        if not isinstance(expression, str):
            raise ConfigError(
                f"a cron expression must be a string, not {type(expression).__name__}"
            )
        self.expression = expression
        fields = expression.split()
        if len(fields) != 5:
            raise ConfigError(
                f"cron expression {expression!r} has {len(fields)} fields; it needs 5:"
                " minute hour day-of-month month day-of-week (e.g. '*/10 * * * *')"
            )
        parsed = [
            _field(expression, text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)
        ]
        self.minutes = sorted(parsed[0], reverse=True)
        self.hours = sorted(parsed[1], reverse=True)
        self.days = parsed[2]
        self.months = parsed[3]
        self.weekdays = {d % 7 for d in parsed[4]}
        self.dom_any = fields[2] == "*"
        self.dow_any = fields[4] == "*"

    def __repr__(self) -> str:
        return f"Cron({self.expression!r})"

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays  # cron counts from Sunday
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def latest(self, after: float, upto: float) -> float | None:
        """The latest tick ``t`` with ``after < t <= upto`` (epoch seconds), or ``None``."""
        end = datetime.fromtimestamp(upto, timezone.utc).replace(second=0, microsecond=0)
        start = datetime.fromtimestamp(after, timezone.utc)
        day = end.date()
        # One step per day at most: a gap of years between invocations costs a few thousand
        # cheap iterations, never one per minute.
        while datetime.combine(day, datetime.min.time(), timezone.utc) > start - timedelta(days=1):
            if self._day_matches(day):
                for hour in self.hours:
                    if day == end.date() and hour > end.hour:
                        continue
                    for minute in self.minutes:
                        tick = datetime(
                            day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc
                        )
                        if tick > end:
                            continue
                        if tick <= start:
                            return None
                        return tick.timestamp()
            day -= timedelta(days=1)
        return None


def _field(expression: str, text: str, name: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _item(expression, item, name, low, high)
    return values


def _item(expression: str, item: str, name: str, low: int, high: int) -> set[int]:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"cron expression {expression!r}: {name} {item!r} {why}")

    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise bad("has a step that is not a positive number")
        step = int(step_text)
    if body == "*":
        first, last = low, high
    else:
        start_text, dash, end_text = body.partition("-")
        if not start_text.isdigit() or (dash and not end_text.isdigit()):
            raise bad(
                f"is not '*', a number, a range a-b or one of these with /step ({low}-{high})"
            )
        first = int(start_text)
        last = int(end_text) if dash else (high if slash else first)
        if not low <= first <= high or not low <= last <= high:
            raise bad(f"is outside {low}-{high}")
        if first > last:
            raise bad("is a range that ends before it starts")
    return set(range(first, last + 1, step))
