"""Feed events to a Lambda handler the way Lambda's Python runtime does, in this process.

    python tests/helpers/proc_lambda_driver.py MODULE.ATTR < events.json

The handler module is imported by its dotted name (as Lambda does with `app.handler`), once;
then each item of the JSON list on stdin, `{"event": ..., "remaining_ms": ...}`, is passed to
`handler(event, context)` in turn, as warm invocations of one container. Each answer is
printed as one JSON line (`{"ok": answer}` or `{"raised": "Type: message"}`), then, if the
module has a `report()` function, `{"report": report()}`.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import uuid
from typing import Any


class Context:
    """The parts of Lambda's context object a handler may use."""

    def __init__(self, remaining_ms: int, function_name: str) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    module_name, _, attr = sys.argv[1].rpartition(".")
    module = importlib.import_module(module_name)
    handler = getattr(module, attr)
    for item in json.load(sys.stdin):
        context = Context(item.get("remaining_ms", 60_000), module_name)
        try:
            answer: Any = {"ok": handler(item["event"], context)}
        except Exception as exc:
            answer = {"raised": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    if hasattr(module, "report"):
        print(json.dumps({"report": module.report()}), flush=True)


if __name__ == "__main__":
    main()
