"""Helpers shared by the benchmark scenarios (not a scenario itself).

Every scenario module is a small script: it runs in its own Python process (so that its peak
memory is its own), prints what it is doing on stderr, and ends by printing one line
``BENCH-RESULT {json}`` on stdout that ``run.py`` parses. Anything else on stdout is ignored,
which matters for ttflow: it ``print()``s a line per workflow it runs.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "


def log(msg: str) -> None:
    """Progress for a human watching; stderr so it never mixes with the result line."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """Hand the scenario's figures to run.py (one JSON line on stdout)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``ru_maxrss`` is a high-water mark for the whole process: the interpreter, the imports,
    the setup of the scenario and the measured part. It is what an operator sizing a Lambda or
    a container cares about. Linux reports KiB, macOS bytes.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 1024 / 1024 if sys.platform == "darwin" else maxrss / 1024


def current_rss_mib() -> float | None:
    """Resident set size right now (Linux only), to tell the baseline from the peak."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence ``print()`` from the library under test (ttflow prints per run).

    Output goes to /dev/null rather than a StringIO so that 10,000 lines do not pile up in
    memory and distort the peak RSS figure.
    """
    with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
        yield
