"""Run management: cancelling a run, reopening a failed one, idempotent starts, retention."""

from __future__ import annotations

import json
from collections.abc import Collection, Container
from typing import Any

from ._exceptions import BackendError, ConflictError, RunNotFoundError, UsageError
from ._record import FINISHED, RunRecord, storable_name
from ._steps import label_position, unfinished
from ._store import Store
from ._validate import name as checked_name

__all__ = [
    "Purged",
    "cancel",
    "claim_event_key",
    "claim_key",
    "keyed_run",
    "purge",
    "reopen",
]

_ATTEMPTS = 20


async def cancel(store: Store, run_id: str) -> None:
    """Mark a pending or paused run cancelled and file it with the finished runs.

    An invocation advancing the run at this moment loses its next write of it (the record's
    version moved), so the run stops there; at most one more side effect runs (one that starts
    before anything new was recorded, so without a checkpoint).
    """
    for _ in range(_ATTEMPTS):
        found = await store.read_run(run_id)
        if found is None:
            done = await store.read_finished(run_id)
            if done is None:
                raise RunNotFoundError(run_id)
            raise UsageError(
                f"run {run_id} has {done[0].status} already; only a waiting run can be cancelled"
            )
        record, version = found
        if record.status in FINISHED:
            raise UsageError(
                f"run {run_id} has {record.status} already; only a waiting run can be cancelled"
            )
        record.status = "cancelled"
        record.wake_at = None
        record.wait_event = None
        record.updated_at = store.clock()
        data = record.encode()
        try:
            version = await store.update_run(run_id, data, version)
        except ConflictError:
            continue  # advanced meanwhile: cancel what it is now
        break
    else:
        raise BackendError(f"run {run_id} kept changing; it could not be cancelled", location=None)
    await store.unindex((await store.wait_index()).names(run_id))
    await store.finish_run(run_id, data, version)


async def reopen(
    store: Store,
    run_id: str,
    workflows: Container[str] | None = None,
) -> None:
    """Move a failed run back to the active runs, ready to execute again from its journal.

    The failed side effect (the last one that raised) or the wait that timed out, and
    everything recorded after it, are dropped, so it executes again; the steps before it
    replay. A run that failed on its own
    exception keeps its whole journal and replays it up to the failure.

    ``workflows``: the workflows the caller defines; a run of another is left as it was
    (UsageError), since nothing here could execute it.
    """
    found = await store.read_finished(run_id)
    if found is None:
        if await store.is_active(run_id):
            raise UsageError(f"run {run_id} has not failed; only a failed run can be retried")
        raise RunNotFoundError(run_id)
    record, version = found
    if record.status != "failed":
        raise UsageError(f"run {run_id} has {record.status}; only a failed run can be retried")
    if workflows is not None and record.workflow not in workflows:
        raise UsageError(
            f"run {run_id} belongs to workflow {record.workflow!r}, which this script does not"
            " define; it is left as it was (retry it from the script that defines it)"
        )
    steps = record.steps
    error = record.error or ""
    if error.startswith(("SideEffectError", "WaitTimeout")):
        # The step that raised what the run failed on: the last side effect that raised, or
        # the last wait that timed out (which then waits again, with its timeout from now).
        failed = [
            i
            for i, s in enumerate(steps)
            if (s["kind"] == "sideeffect" and "error" in s and error.startswith("Side"))
            or (s["kind"] == "wait_event" and s.get("timed_out") and error.startswith("Wait"))
        ]
        if failed:
            steps = _reopened(steps, failed[-1])
    raw = json.loads(record.encode())
    raw.update(status="pending", error=None, result=None, steps=steps, updated_at=store.clock())
    raw.pop("traceback", None)
    where = store.where(run_id, finished=True)
    reopened = RunRecord.decode(json.dumps(raw, ensure_ascii=False).encode(), where)
    try:
        await store.create_run(reopened)
    except ConflictError:
        raise UsageError(f"run {run_id} is being retried already") from None
    await store.delete_finished(run_id, version)


def _reopened(steps: list[dict[str, Any]], cut: int) -> list[dict[str, Any]]:
    """The journal without the failed step ``steps[cut]`` and what came of it.

    Steps are addressed per context (the workflow, each branch of a gather, each attempt of a
    retried side effect: a step's ``branch`` path). In the failed step's context and each
    context above it, the steps after it go; the side effects around it (and a retried side
    effect whose attempt failed) become unfinished, so they are entered again; the contexts
    under what goes go too. Other branches keep what they recorded: it replays.
    """
    own: dict[str, list[int]] = {}
    for i, step in enumerate(steps):
        own.setdefault(step.get("branch", ""), []).append(i)
    failed_path = steps[cut].get("branch", "")
    # Each context from the failed step's up to the workflow's, with the position in it where
    # the failure happened: the failed step, or the step that made the context below.
    chain = {failed_path: own[failed_path].index(cut)}
    path = failed_path
    while path:
        path, _, label = path.rpartition("/")
        chain[path] = label_position(label)
    keep: list[tuple[int, dict[str, Any]]] = []
    for path, indices in own.items():
        for pos, i in enumerate(indices):
            step = steps[i]
            if path in chain:
                at = chain[path]
                if pos > at or (pos == at and path == failed_path):
                    continue
                if step["kind"] == "sideeffect" and (
                    pos == at or ("span" in step and pos + step["span"] >= at)
                ):
                    step = unfinished(step)
            elif _under_what_goes(path, chain, failed_path, steps, own):
                continue
            keep.append((i, step))
    return [step for _, step in sorted(keep, key=lambda kept: kept[0])]


def _under_what_goes(
    path: str,
    chain: dict[str, int],
    failed_path: str,
    steps: list[dict[str, Any]],
    own: dict[str, list[int]],
) -> bool:
    """Whether context ``path`` (not on the chain) was made by a step that goes or is entered
    again, so that its steps would not be reached as recorded."""
    parent, _, label = path.rpartition("/")
    while parent not in chain:
        parent, _, label = parent.rpartition("/")
    at, pos = chain[parent], label_position(label)
    if pos != at:
        return pos > at
    if parent == failed_path:
        return True  # an attempt of the failed side effect
    # Made by the step the failure came through: a sibling branch of a gather keeps its steps;
    # an earlier attempt of a side effect entered again does not.
    return bool(steps[own[parent][at]]["kind"] == "sideeffect")


async def claim_event_key(store: Store, event: str, key: str, event_id: str) -> str:
    """The id under which event ``event`` is delivered for idempotency key ``key``.

    The first caller records ``event_id`` for the key (a create-only write) and gets it back;
    later callers get the id recorded first. Delivering an event again under the same id
    starts nothing twice (the runs it starts have ids derived from it) and wakes no run twice
    (a woken wait records it), so a redelivered message completes what a crashed delivery left
    half done and repeats nothing.
    """
    checked_name(key, "an idempotency key", error=UsageError)
    found = await store.take_event_key(event, key, event_id)
    return event_id if found is None else found


async def claim_key(store: Store, record: RunRecord, key: str) -> bool:
    """Make ``record`` the one run of its workflow for ``key``.

    Returns ``False`` when a run for the key exists already (``record`` then gets its id).
    The key is taken with a
    create-only write, so of concurrent callers (in any process) one wins. A caller that won
    but died before storing its run left a key without a run: the next caller stores the run
    under the id the key names (``record`` gets that id).
    """
    checked_name(key, "an idempotency key", error=UsageError)
    storable_name(key, "idempotency key")
    run_id = await store.take_run_key(record.workflow, key, record.run_id)
    if run_id is None:
        return True
    record.run_id = run_id
    return not await store.exists(run_id)


async def keyed_run(store: Store, workflow: str, key: str) -> str | None:
    """The id of the run of ``workflow`` that idempotency key ``key`` started, if any."""
    return await store.keyed_run(workflow, key)


class Purged:
    """What :func:`purge` did: the runs deleted, and the records it could not read (kept)."""

    def __init__(self) -> None:
        self.run_ids: list[str] = []
        self.unreadable: list[str] = []


async def purge(
    store: Store, *, finished_before: float, statuses: Collection[str], dry_run: bool = False
) -> Purged:
    """Delete the finished runs with one of ``statuses`` last updated before ``finished_before``
    (epoch seconds), with the idempotency keys that name them (a key can then start a new run).

    Only the finished runs' namespace is touched, each record deleted at the version read: a
    run retried meanwhile is left alone. A record that cannot be read is kept and reported.
    """
    unknown = set(statuses) - FINISHED
    if unknown:
        raise UsageError(f"only finished runs can be purged, not {sorted(unknown)}")
    purged = Purged()
    for name, entry, where in await store.finished_entries():
        try:
            record = RunRecord.decode(entry.data, where)
        except BackendError:
            purged.unreadable.append(where)
            continue
        if record.status not in statuses or record.updated_at >= finished_before:
            continue
        if not dry_run:
            try:
                await store.delete_finished(name, entry.version)
            except ConflictError:
                continue  # changed since read (retried): not what was asked to go
        purged.run_ids.append(record.run_id)
    if purged.run_ids and not dry_run:
        await store.drop_keys(purged.run_ids)
    return purged
