"""Run management: cancelling a run, reopening a failed one, idempotent starts, retention."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Container
from typing import Any

from ._backend import Backend
from ._engine import ACTIVE, DONE, finish
from ._exceptions import BackendError, ConflictError, RunNotFoundError, UsageError
from ._record import FINISHED, RunRecord, dumps, storable_name
from ._waits import WAITS, WaitIndex, sha256_hex

__all__ = [
    "KEYS",
    "Purged",
    "cancel",
    "claim_event_key",
    "claim_key",
    "keyed_run",
    "purge",
    "reopen",
]

KEYS = "keys"
_ATTEMPTS = 20


async def cancel(backend: Backend, clock: Callable[[], float], run_id: str) -> None:
    """Mark a pending or paused run cancelled and file it with the finished runs.

    An invocation advancing the run at this moment loses its next write of it (the record's
    version moved), so the run stops there; at most one more side effect runs (one that starts
    before anything new was recorded, so without a checkpoint).
    """
    key = (ACTIVE, run_id)
    for _ in range(_ATTEMPTS):
        entry = await backend.read(key)
        if entry is None:
            done = await backend.read((DONE, run_id))
            if done is None:
                raise RunNotFoundError(run_id)
            status = RunRecord.decode(done.data, backend.locate((DONE, run_id)), run_id).status
            raise UsageError(
                f"run {run_id} has {status} already; only a waiting run can be cancelled"
            )
        record = RunRecord.decode(entry.data, backend.locate(key), run_id)
        if record.status in FINISHED:
            raise UsageError(
                f"run {run_id} has {record.status} already; only a waiting run can be cancelled"
            )
        record.status = "cancelled"
        record.wake_at = None
        record.wait_event = None
        record.updated_at = clock()
        data = record.encode()
        try:
            version = await backend.write(key, data, if_version=entry.version)
        except ConflictError:
            continue  # advanced meanwhile: cancel what it is now
        break
    else:
        raise BackendError(f"run {run_id} kept changing; it could not be cancelled", location=None)
    index = WaitIndex(await backend.list(WAITS))
    for name in index.names(run_id):
        await backend.delete((WAITS, name))
    await finish(backend, run_id, data, version)


async def reopen(
    backend: Backend,
    clock: Callable[[], float],
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
    key = (DONE, run_id)
    entry = await backend.read(key)
    if entry is None:
        if await backend.read((ACTIVE, run_id)) is not None:
            raise UsageError(f"run {run_id} has not failed; only a failed run can be retried")
        raise RunNotFoundError(run_id)
    record = RunRecord.decode(entry.data, backend.locate(key), run_id)
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
    raw.update(status="pending", error=None, result=None, steps=steps, updated_at=clock())
    raw.pop("traceback", None)
    reopened = RunRecord.decode(json.dumps(raw, ensure_ascii=False).encode(), backend.locate(key))
    try:
        await backend.write((ACTIVE, run_id), reopened.encode(), if_absent=True)
    except ConflictError:
        raise UsageError(f"run {run_id} is being retried already") from None
    await backend.delete(key, if_version=entry.version)


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
        chain[path] = _label_position(label)
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
                    step = _unfinished(step)
            elif _under_what_goes(path, chain, failed_path, steps, own):
                continue
            keep.append((i, step))
    return [step for _, step in sorted(keep, key=lambda kept: kept[0])]


def _label_position(label: str) -> int:
    # "3.1": branch 1 of the gather at position 3; "5#2": attempt 2 of the side effect at 5.
    return int(label.replace("#", ".").split(".")[0])


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
    at, pos = chain[parent], _label_position(label)
    if pos != at:
        return pos > at
    if parent == failed_path:
        return True  # an attempt of the failed side effect
    # Made by the step the failure came through: a sibling branch of a gather keeps its steps;
    # an earlier attempt of a side effect entered again does not.
    return bool(steps[own[parent][at]]["kind"] == "sideeffect")


def _unfinished(step: dict[str, Any]) -> dict[str, Any]:
    unfinished = {"kind": "sideeffect", "name": step["name"]}
    if "branch" in step:
        unfinished["branch"] = step["branch"]
    return unfinished


async def claim_event_key(backend: Backend, event: str, key: str, event_id: str) -> str:
    """The id under which event ``event`` is delivered for idempotency key ``key``.

    The first caller records ``event_id`` for the key (a create-only write) and gets it back;
    later callers get the id recorded first. Delivering an event again under the same id
    starts nothing twice (the runs it starts have ids derived from it) and wakes no run twice
    (a woken wait records it), so a redelivered message completes what a crashed delivery left
    half done and repeats nothing.
    """
    if not isinstance(key, str) or not key:
        raise UsageError(f"an idempotency key must be a non-empty string, not {key!r}")
    # "\0event\0" keeps these apart from claim_key's names, which start with a workflow's.
    name = sha256_hex(f"\0event\0{event}\0{key}")[:40]
    content = {"asyncflow": "key", "event": event, "key": key, "event_id": event_id}
    found = await _take_key(backend, name, content, "event_id")
    return event_id if found is None else found


async def _take_key(
    backend: Backend, name: str, content: dict[str, str], field: str
) -> str | None:
    """Store ``content`` as key ``name`` if no one did (``None``); else the ``field`` that the
    first writer recorded there (a BackendError if the stored key is not ours)."""
    try:
        await backend.write((KEYS, name), dumps(content, "").encode(), if_absent=True)
        return None
    except ConflictError:
        pass
    entry = await backend.read((KEYS, name))
    try:
        found = json.loads(entry.data if entry is not None else b"")[field]
        if not isinstance(found, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        location = backend.locate((KEYS, name))
        raise BackendError(
            f"{location} is not asyncflow's record of key {content['key']!r}; asyncflow"
            " leaves it untouched",
            location=location,
        ) from None
    return found


async def claim_key(backend: Backend, record: RunRecord, key: str) -> bool:
    """Make ``record`` the one run of its workflow for ``key``.

    Returns ``False`` when a run for the key exists already (``record`` then gets its id).
    The key is taken with a
    create-only write, so of concurrent callers (in any process) one wins. A caller that won
    but died before storing its run left a key without a run: the next caller stores the run
    under the id the key names (``record`` gets that id).
    """
    if not isinstance(key, str) or not key:
        raise UsageError(f"an idempotency key must be a non-empty string, not {key!r}")
    storable_name(key, "idempotency key")
    name = sha256_hex(f"{record.workflow}\0{key}")[:40]
    content = {
        "asyncflow": "key",
        "workflow": record.workflow,
        "key": key,
        "run_id": record.run_id,
    }
    run_id = await _take_key(backend, name, content, "run_id")
    if run_id is None:
        return True
    record.run_id = run_id
    found = await backend.read_many([(ACTIVE, run_id), (DONE, run_id)])
    return all(e is None for e in found)


async def keyed_run(backend: Backend, workflow: str, key: str) -> str | None:
    """The id of the run of ``workflow`` that idempotency key ``key`` started, if any."""
    entry = await backend.read((KEYS, sha256_hex(f"{workflow}\0{key}")[:40]))
    if entry is None:
        return None
    try:
        run_id = json.loads(entry.data)["run_id"]
    except (ValueError, KeyError, TypeError):
        return None  # not ours: claim_key reports it
    return run_id if isinstance(run_id, str) else None


class Purged:
    """What :func:`purge` did: the runs deleted, and the records it could not read (kept)."""

    def __init__(self) -> None:
        self.run_ids: list[str] = []
        self.unreadable: list[str] = []


async def purge(
    backend: Backend, *, finished_before: float, statuses: Collection[str], dry_run: bool = False
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
    keys = [(DONE, name) for name in await backend.list(DONE)]
    for key, entry in zip(keys, await backend.read_many(keys), strict=True):
        if entry is None:
            continue
        try:
            record = RunRecord.decode(entry.data, backend.locate(key))
        except BackendError:
            purged.unreadable.append(backend.locate(key))
            continue
        if record.status not in statuses or record.updated_at >= finished_before:
            continue
        if not dry_run:
            try:
                await backend.delete(key, if_version=entry.version)
            except ConflictError:
                continue  # changed since read (retried): not what was asked to go
        purged.run_ids.append(record.run_id)
    if purged.run_ids and not dry_run:
        gone = set(purged.run_ids)
        names = list(await backend.list(KEYS))
        found = await backend.read_many([(KEYS, n) for n in names])
        for name, key_entry in zip(names, found, strict=True):
            try:
                run_id = json.loads(key_entry.data)["run_id"] if key_entry else None
            except (ValueError, KeyError, TypeError):
                continue
            if run_id in gone:
                await backend.delete((KEYS, name))
    return purged
