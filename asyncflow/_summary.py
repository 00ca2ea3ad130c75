"""The RUN SUMMARY an invocation prints, in English or in the seed's Japanese."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._results import Run, RunResult
from ._steps import compact, local_time

__all__ = [
    "LANGUAGES",
    "Summary",
    "compact",
    "format_summary",
    "language",
    "local_time",
    "message",
    "waiting_for",
]

LANGUAGES = ("en", "ja")

# The seed (ttflow) prints its summary in Japanese: these are its words ("1件のワークフローが
# 実行されました", "ワークフロー名", "状態", "ログ"), and ours for what it did not have.
_MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "runs": "{n} workflow run{s}",
        "item": "{i}.",
        "workflow": "workflow",
        "status": "status",
        "result": "result",
        "error": "error",
        "waiting": "waiting for",
        "logs": "logs",
        "total": "total: {counts}",
        "count": "{n} {status}",
        "held": "{n} due run{s} skipped: another invocation holds {them} (it reports {them})",
        "undefined": "{n} run{s} of workflows this script does not define left as they are:"
        " {names}",
        "store": "store: {store}",
        "next": "next invocation",
        "time": "time {when}",
        "event": "event {name}",
        "event_until": "event {name} (until {when})",
        "key_used": "key {key!r} was used already by run {run_id} of {workflow} ({status});"
        " not started again",
        "not_taken": "nothing took event {name!r}: no workflow is started by it and no run"
        " waits for it (an event is not kept for runs that wait later)",
    },
    "ja": {
        "runs": "{n}件のワークフローが実行されました",
        "item": "{i}件目",
        "workflow": "ワークフロー名",
        "status": "状態",
        "result": "結果",
        "error": "エラー",
        "waiting": "待機中",
        "logs": "ログ",
        "total": "合計: {counts}",
        "count": "{status} {n}件",
        "held": "実行予定の{n}件は別の実行が処理中のためスキップしました(そちらで報告されます)",
        "undefined": "このスクリプトで定義されていないワークフローの{n}件はそのままです: {names}",
        "store": "保存先: {store}",
        "next": "次回の実行",
        "time": "時刻 {when}",
        "event": "イベント {name}",
        "event_until": "イベント {name} ({when} まで)",
        "key_used": "キー {key!r} は実行 {run_id} ({workflow}, {status}) で使用済みのため、"
        "新たに開始していません",
        "not_taken": "イベント {name!r} を受け取ったものはありません: これで開始するワークフローも"
        "待っている実行もありません(後から待ち始める実行のためにイベントは保存されません)",
    },
}


def language(choice: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``choice`` if given, else Japanese when the locale is (``LC_ALL``, ``LC_MESSAGES``,
    ``LANG``: the first one set, as POSIX reads them), else English."""
    if choice is not None:
        return choice
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            return "ja" if value.lower().startswith("ja") else "en"
    return "en"


def message(lang: str, which: str, /, **values: Any) -> str:
    """A message in ``lang``, filled in (``s`` and ``them`` agree in number with ``n``)."""
    n = values.get("n")
    if n is not None:
        values.setdefault("s", "" if n == 1 else "s")
        values.setdefault("them", "it" if n == 1 else "them")
    return _MESSAGES[lang][which].format(**values)


@dataclass
class Summary:
    """What an invocation (or a worker's invocations) did, for the RUN SUMMARY.

    ``results`` holds the last result of each run, in the order the invocations reported them;
    ``in_flight`` those of an invocation that has not returned yet, as they came (what an
    interrupted invocation did is reported too).
    """

    results: dict[str, RunResult] = field(default_factory=dict)
    held: int = 0
    undefined: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    in_flight: dict[str, RunResult] = field(default_factory=dict)

    def add(self, results: Sequence[RunResult]) -> None:
        """Record what an invocation returned."""
        for result in results:
            self.results[result.run_id] = result
        self.in_flight.clear()

    def runs(self) -> list[RunResult]:
        """Each run's last result."""
        return [*self.results.values(), *self.in_flight.values()]


def format_summary(
    results: Sequence[RunResult] | Summary, *, lang: str = "en", store: str | None = None
) -> str:
    """The seed's RUN SUMMARY text: each run with its result, what a paused run waits for, and
    its logs; then the totals by status, what was skipped, and the store."""
    summary = results if isinstance(results, Summary) else Summary()
    if not isinstance(results, Summary):
        summary.add(results)
    runs = summary.runs()
    lines = ["", "---------RUN SUMMARY---------", message(lang, "runs", n=len(runs))]
    for i, r in enumerate(runs, 1):
        lines += [
            f"\t{message(lang, 'item', i=i)}",
            f"\t  {message(lang, 'workflow')}: {r.workflow}",
            f"\t  run_id: {r.run_id}",
            f"\t  {message(lang, 'status')}: {r.status}",
        ]
        if r.status == "succeeded" and r.result is not None:
            lines.append(f"\t  {message(lang, 'result')}: {compact(r.result)}")
        if r.error is not None:
            lines.append(f"\t  {message(lang, 'error')}: {r.error}")
        if r.status == "paused":
            lines.append(f"\t  {message(lang, 'waiting')}: {waiting_for(r, lang)}")
        if r.logs:
            lines.append(f"\t  {message(lang, 'logs')}:")
            lines += [f"\t    - {line}" for line in r.logs]
    if runs:
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        order = ("succeeded", "failed", "paused", "damaged")
        text = ", " if lang == "en" else "、"
        lines.append(
            message(
                lang,
                "total",
                counts=text.join(
                    message(lang, "count", n=counts[s], status=s) for s in order if s in counts
                ),
            )
        )
    if summary.held:
        lines.append(message(lang, "held", n=summary.held))
    if summary.undefined:
        names = ", ".join(f"{w} ({n})" for w, n in sorted(summary.undefined.items()))
        lines.append(message(lang, "undefined", n=sum(summary.undefined.values()), names=names))
    lines += summary.notes
    if store is not None:
        lines.append(message(lang, "store", store=store))
    return "\n".join(lines) + "\n"


def waiting_for(run: Run | RunResult, lang: str = "en") -> str:
    """Why a run that has not finished waits: the next invocation, a time, an event."""
    if run.status not in ("pending", "paused"):
        return ""
    if run.wait_event is not None:
        if run.wake_at is None:
            return message(lang, "event", name=run.wait_event)
        return message(lang, "event_until", name=run.wait_event, when=local_time(run.wake_at))
    if run.wake_at is not None:
        return message(lang, "time", when=local_time(run.wake_at))
    return message(lang, "next")
