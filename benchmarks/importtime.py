"""Import cost: ``import asyncflow`` in a fresh interpreter.

What it measures: the wall time of the import statement alone (interpreter start-up is not
included), median over several fresh processes, because every CLI call and every Lambda cold
start pays it. It also lists which heavy optional dependencies ended up in ``sys.modules``:
the AWS backends' libraries (aiobotocore, botocore) and httpx must be imported lazily, only
when such a backend is asked for, so they must be absent after a bare ``import asyncflow``.

The slowest modules (cumulative, from ``python -X importtime``) are reported too, so that a
regression says where it comes from.

    python benchmarks/importtime.py --reps 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchutil import emit, log, median

# Reported when loaded. Only the first three are forbidden (see run.py); the others are worth
# seeing: trio is optional, and asyncio (with ssl, socket, subprocess) is dead weight for a
# trio user and about half of a bare interpreter's import budget.
HEAVY = ("aiobotocore", "botocore", "boto3", "httpx", "httpcore", "trio", "asyncio")

# Runs in the child. perf_counter around the import only; the child reports what it loaded.
PROBE = f"""
import sys, time, json
before = set(sys.modules)
t = time.perf_counter()
import asyncflow
dt = time.perf_counter() - t
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"seconds": dt, "heavy": heavy, "new_modules": len(set(sys.modules) - before)}}))
"""


def probe_once() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def slowest_imports(top: int = 5) -> list[tuple[str, float]]:
    """asyncflow and the modules it imports, by cumulative time (``python -X importtime``).

    The first row is asyncflow itself (its cumulative time is the whole import); the next ones
    say what that time is spent on. The interpreter's own start-up imports (site, encodings)
    are left out: they are paid by every Python program.
    """
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import asyncflow"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    # Lines read "import time: <self us> | <cumulative us> | <name>", where the name is
    # indented by two spaces per nesting level and a module is listed after what it imports,
    # so asyncflow's imports are the nested lines right before its own top-level line.
    rows: list[tuple[str, float]] = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if name == " asyncflow":
            rows.append((name.strip(), int(cumulative) / 1e6))
            break
        if not name.startswith("  "):  # another top-level import: start again after it
            rows = []
            continue
        rows.append((name.strip(), int(cumulative) / 1e6))
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows[:top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()

    probe_once()  # warm the OS file cache and write .pyc files, so rep 1 is not an outlier
    samples = []
    for rep in range(a.reps):
        samples.append(probe_once())
        log(f"rep {rep + 1}/{a.reps}: {samples[-1]['seconds'] * 1000:.1f} ms")
    times = [s["seconds"] for s in samples]
    heavy = sorted({m for s in samples for m in s["heavy"]})
    emit(
        {
            "reps": a.reps,
            "times_s": times,
            "median_s": median(times),
            "heavy_loaded": heavy,
            "forbidden_loaded": [
                m for m in heavy if m.split(".")[0] in ("aiobotocore", "botocore", "httpx")
            ],
            "new_modules": samples[-1]["new_modules"],
            "slowest": slowest_imports(),
            "problems": [],
        }
    )


if __name__ == "__main__":
    main()
