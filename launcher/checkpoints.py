"""The checkpoint protocol on an object store (a job's prefix store, see :mod:`launcher.contract`).

A checkpoint is the folder ``ckpt/step-XXXXXXXX/`` and exists only once its ``MANIFEST.json`` does:
uploads put every file first and the manifest last; downloads fill a temp folder, verify every
sha256 against the manifest, write the manifest last and rename the folder into place. So a
preemption at any moment leaves either a whole checkpoint or one that every reader ignores.

    upload_checkpoint(store, "/ckpt/step-00001200")      # after the trainer committed it locally
    download_latest(store, "/ckpt")                       # highest step that verifies, or None
    apply_retention(store, keep_last=3)                   # plus the best, plus orphan clean-up
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from launcher import contract
from launcher.store.base import NotFound, ObjectStore, StoreError, join_key

log = logging.getLogger(__name__)


class CheckpointError(StoreError):
    """A checkpoint is missing, incomplete or does not verify against its manifest."""


@dataclass(frozen=True)
class RemoteCheckpoint:
    step: int
    prefix: str  # "ckpt/step-00001234", relative to the job store
    manifest: dict[str, Any]


def step_prefix(step: int) -> str:
    return join_key(contract.CKPT_PREFIX, contract.step_dirname(step))


# --- upload ---------------------------------------------------------------------------------------
def upload_checkpoint(store: ObjectStore, local_step_dir: str | os.PathLike,
                      before_manifest: Callable[[], Any] | None = None) -> RemoteCheckpoint:
    """Upload a committed local checkpoint folder: its files, then ``MANIFEST.json`` last
    (``before_manifest`` is called in between: a fire drill's pause point).

    The local folder must hold a manifest whose files are all present with their sizes. An
    earlier manifest of the same step in the store is deleted first, so the step never looks
    complete while its files are being replaced. Safe to call twice."""
    root = Path(local_step_dir)
    manifest = contract.verify_checkpoint(root, check_hash=False)
    if manifest is None:
        raise CheckpointError(f"{root} is not a complete checkpoint (no {contract.MANIFEST_NAME} or "
                              f"a file it lists is missing); it cannot be uploaded")
    step = int(manifest["step"])
    prefix = step_prefix(step)
    manifest_key = join_key(prefix, contract.MANIFEST_NAME)
    if store.exists(manifest_key):  # checked first: a blind delete adds a marker when versioned
        store.delete(manifest_key)
    for rel in sorted(manifest["files"]):
        store.put_file(root / rel, join_key(prefix, rel))
    if before_manifest is not None:
        before_manifest()
    store.put_bytes(manifest_key, json.dumps(manifest, indent=1, sort_keys=True).encode())
    log.info("uploaded checkpoint step %d to %s/%s", step, store.uri, prefix)
    return RemoteCheckpoint(step, prefix, manifest)


# --- listing ----------------------------------------------------------------------------------------
def _group_by_step(store: ObjectStore) -> dict[int, dict[str, int]]:
    """``{step: {relative file name: size}}`` for every ``ckpt/step-*/`` folder in the store."""
    steps: dict[int, dict[str, int]] = {}
    for obj in store.list(contract.CKPT_PREFIX):
        parts = obj.key[len(contract.CKPT_PREFIX):].split("/", 1)
        step = contract.parse_step(parts[0])
        if step is not None and len(parts) == 2:
            steps.setdefault(step, {})[parts[1]] = obj.size
    return steps


def _read_manifest(store: ObjectStore, step: int) -> dict[str, Any] | None:
    try:
        m = json.loads(store.get_bytes(join_key(step_prefix(step), contract.MANIFEST_NAME)))
    except (NotFound, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format") != contract.MANIFEST_FORMAT:
        return None
    return m if isinstance(m.get("files"), dict) else None


def _complete(manifest: dict[str, Any], sizes: dict[str, int]) -> bool:
    return all(sizes.get(rel) == meta.get("size") for rel, meta in manifest["files"].items())


def list_checkpoints(store: ObjectStore) -> list[RemoteCheckpoint]:
    """Every checkpoint whose manifest exists and whose listed files all exist with the listed
    sizes, highest step first. (Hashes are checked on download, not here.)"""
    found = []
    for step, sizes in sorted(_group_by_step(store).items(), reverse=True):
        if contract.MANIFEST_NAME not in sizes:
            continue
        manifest = _read_manifest(store, step)
        if manifest is not None and _complete(manifest, sizes):
            found.append(RemoteCheckpoint(step, step_prefix(step), manifest))
    return found


def latest_checkpoint(store: ObjectStore) -> RemoteCheckpoint | None:
    found = list_checkpoints(store)
    return found[0] if found else None


# --- download ---------------------------------------------------------------------------------------
def download_checkpoint(store: ObjectStore, step: int, local_root: str | os.PathLike) -> Path:
    """Download step ``step`` to ``local_root/step-XXXXXXXX/`` and return that path.

    Files land in a temp folder, are checked against the manifest's sizes and sha256, the
    manifest is written last, and the folder is renamed into place. A local copy that already
    verifies against the same manifest is kept as is. Raises :class:`CheckpointError` when the
    checkpoint is missing or does not verify (nothing is left behind then)."""
    manifest = _read_manifest(store, step)
    if manifest is None:
        raise CheckpointError(f"no checkpoint at step {step} in {store.uri}")
    root = Path(local_root)
    final = root / contract.step_dirname(step)
    if contract.verify_checkpoint(final) == manifest:
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{contract.step_dirname(step)}.partial-{uuid.uuid4().hex[:8]}"
    try:
        for rel, meta in sorted(manifest["files"].items()):
            target = tmp / rel
            try:
                store.get_file(join_key(step_prefix(step), rel), target)
            except NotFound as e:
                raise CheckpointError(f"checkpoint step {step} in {store.uri}: {rel} is missing") from e
            size = target.stat().st_size
            if size != meta["size"] or contract.sha256_file(target) != meta["sha256"]:
                raise CheckpointError(f"checkpoint step {step} in {store.uri}: {rel} does not match "
                                      f"its manifest (size {size}, expected {meta['size']}, or sha256)")
        tmp.mkdir(parents=True, exist_ok=True)
        contract.write_manifest(tmp, manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def download_latest(store: ObjectStore, local_root: str | os.PathLike) -> tuple[int, Path] | None:
    """Download the highest checkpoint that verifies, falling back step by step past ones that
    do not. ``(step, local path)``, or None when the store holds no usable checkpoint."""
    for ckpt in list_checkpoints(store):
        try:
            return ckpt.step, download_checkpoint(store, ckpt.step, local_root)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
    return None


# --- retention ----------------------------------------------------------------------------------
def _best_step(checkpoints: list[RemoteCheckpoint]) -> int | None:
    """The step whose manifest's ``best.value`` is best by its ``mode`` (max or min)."""
    scored = [(c.manifest["best"], c.step) for c in checkpoints
              if isinstance(c.manifest.get("best"), dict)
              and isinstance(c.manifest["best"].get("value"), (int, float))]
    if not scored:
        return None
    mode = scored[0][0].get("mode", "max")  # scored[0] is the newest: its mode is current
    if mode not in ("max", "min"):
        raise CheckpointError(f"manifest best.mode must be 'max' or 'min', got {mode!r}")
    sign = 1 if mode == "max" else -1
    # Ties go to the earliest step: later checkpoints carry the best-so-far value forward.
    return max(scored, key=lambda t: (sign * t[0]["value"], -t[1]))[1]


def apply_retention(store: ObjectStore, keep_last: int, keep_best: bool = True) -> list[int]:
    """Delete checkpoints other than the newest ``keep_last`` and (with ``keep_best``) the best,
    plus step folders without a usable manifest that are older than the newest complete
    checkpoint (left by an interrupted upload). Newer incomplete folders are uploads in progress
    and are never touched. Each deletion removes the manifest first. Returns the deleted steps."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    complete = list_checkpoints(store)
    if not complete:
        return []
    keep = {c.step for c in complete[:keep_last]}
    if keep_best and (best := _best_step(complete)) is not None:
        keep.add(best)
    newest = complete[0].step
    complete_steps = {c.step for c in complete}
    doomed = [c.step for c in complete if c.step not in keep]
    doomed += [s for s in _group_by_step(store) if s not in complete_steps and s < newest]
    for step in sorted(doomed):
        store.delete(join_key(step_prefix(step), contract.MANIFEST_NAME))
        store.delete_prefix(step_prefix(step) + "/")
        log.info("retention: deleted checkpoint step %d from %s", step, store.uri)
    return sorted(doomed)


# --- logs and metrics ---------------------------------------------------------------------------
_SYNCED: dict[tuple[str, str], tuple[int, int]] = {}


def sync_file_up(store: ObjectStore, local_path: str | os.PathLike, key: str,
                 state: dict[tuple[str, str], tuple[int, int]] | None = None) -> bool:
    """Upload ``local_path`` to ``key`` when its size or mtime changed since the last upload by
    this process (``state`` holds what was uploaded; a module-level dict by default). Returns
    whether it uploaded. A missing local file is not an error: there is nothing to sync yet."""
    state = _SYNCED if state is None else state
    try:
        st = os.stat(local_path)
    except FileNotFoundError:
        return False
    seen = (st.st_size, st.st_mtime_ns)
    if state.get((store.uri, key)) == seen:
        return False
    store.put_file(local_path, key)
    state[(store.uri, key)] = seen
    return True
