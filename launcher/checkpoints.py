"""The checkpoint protocol on an object store (a job's prefix store, see :mod:`launcher.contract`).

A checkpoint is the folder ``ckpt/step-XXXXXXXX/`` and exists only once its ``MANIFEST.json`` does:
uploads put every file first and the manifest last; downloads fill a temp folder, verify every
sha256 against the manifest, write the manifest last and rename the folder into place. So a
preemption at any moment leaves either a whole checkpoint or one that every reader ignores.

    upload_checkpoint(store, "/ckpt/step-00001200")      # after the trainer committed it locally
    download_latest(store, "/ckpt")                       # highest step that verifies, or None
    apply_retention(store, keep_last=3)                   # plus the best, plus orphan clean-up

**Unchanged files are not uploaded again.** A file whose sha256 and size equal a file of a complete
checkpoint already in the store (frozen weights, a data-set index) is not sent: the uploaded
manifest's ``stored`` map names where its content is, ``{"frozen.pt": "step-00000100/frozen.pt"}``
(keys under ``ckpt/``, always the first upload of that content). Downloads fetch it from there and
verify its sha256 like every other file; retention keeps a file as long as a kept manifest names
it. The local copy's manifest is the trainer's own (no ``stored`` map). Files go up and down on
``LAUNCH_S3_FILE_WORKERS`` threads (default 8), the manifest always last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from launcher import contract
from launcher.store.base import NotFound, ObjectStore, StoreError, join_key

log = logging.getLogger(__name__)

STORED = "stored"  # manifest key: {file: key under ckpt/ where an earlier upload holds its content}


def file_workers() -> int:
    try:
        return max(1, int(os.environ.get("LAUNCH_S3_FILE_WORKERS", "8")))
    except ValueError:
        return 8


def _each(fn, items: list) -> None:
    """``fn`` over ``items`` on a few threads; the first error is raised once all are done."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(max_workers=min(file_workers(), len(items))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def file_key(step: int, rel: str, manifest: dict[str, Any]) -> str:
    """The store key (under the job's prefix) that holds checkpoint file ``rel`` of ``step``."""
    ref = (manifest.get(STORED) or {}).get(rel)
    return join_key(contract.CKPT_PREFIX, ref) if ref else join_key(step_prefix(step), rel)


def local_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the trainer wrote it: without the store's ``stored`` map."""
    return {k: v for k, v in manifest.items() if k != STORED}


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
def upload_checkpoint(store: ObjectStore, local_step_dir: str | os.PathLike, *,
                      reuse: bool = True, before_manifest: Callable[[], Any] | None = None) -> RemoteCheckpoint:
    """Upload a committed local checkpoint folder: its files, then ``MANIFEST.json`` last
    (``before_manifest`` is called in between: a fire drill's pause point).

    The local folder must hold a manifest whose files are all present with their sizes. An
    earlier manifest of the same step in the store is deleted first, so the step never looks
    complete while its files are being replaced. With ``reuse``, files whose content a complete
    checkpoint in the store already holds are named in the manifest's ``stored`` map instead of
    sent again. Safe to call twice."""
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
    held = _content_index(store, skip=step) if reuse else {}
    stored = {rel: held[(meta["sha256"], meta["size"])] for rel, meta in manifest["files"].items()
              if (meta.get("sha256"), meta.get("size")) in held}
    todo = sorted(rel for rel in manifest["files"] if rel not in stored)
    _each(lambda rel: store.put_file(root / rel, join_key(prefix, rel)), todo)
    if before_manifest is not None:
        before_manifest()
    remote = {**manifest, STORED: stored} if stored else manifest
    store.put_bytes(manifest_key, json.dumps(remote, indent=1, sort_keys=True).encode())
    log.info("uploaded checkpoint step %d to %s/%s (%d file(s) sent, %d already in the store)",
             step, store.uri, prefix, len(todo), len(stored))
    return RemoteCheckpoint(step, prefix, remote)


def _content_index(store: ObjectStore, skip: int) -> dict[tuple[str, int], str]:
    """``{(sha256, size): key under ckpt/}`` of every file of the complete checkpoints in the
    store (other than step ``skip``), each pointing at the first upload of its content."""
    index: dict[tuple[str, int], str] = {}
    for ckpt in list_checkpoints(store):
        if ckpt.step == skip:
            continue
        for rel, meta in ckpt.manifest["files"].items():
            key = file_key(ckpt.step, rel, ckpt.manifest)[len(contract.CKPT_PREFIX):]
            index.setdefault((meta.get("sha256"), meta.get("size")), key)
    return index


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


def _split_ref(key: str) -> tuple[int | None, str]:
    """``"step-00000100/a/b.pt"`` -> ``(100, "a/b.pt")``."""
    head, _, rel = key.partition("/")
    return contract.parse_step(head), rel


def _complete(manifest: dict[str, Any], step: int, steps: dict[int, dict[str, int]]) -> bool:
    stored = manifest.get(STORED) or {}
    if not isinstance(stored, dict):
        return False
    for rel, meta in manifest["files"].items():
        where, name = _split_ref(stored[rel]) if rel in stored else (step, rel)
        if steps.get(where, {}).get(name) != meta.get("size"):
            return False
    return True


def list_checkpoints(store: ObjectStore) -> list[RemoteCheckpoint]:
    """Every checkpoint whose manifest exists and whose listed files all exist with the listed
    sizes (where they are stored), highest step first. (Hashes are checked on download.)"""
    found = []
    steps = _group_by_step(store)
    for step, sizes in sorted(steps.items(), reverse=True):
        if contract.MANIFEST_NAME not in sizes:
            continue
        manifest = _read_manifest(store, step)
        if manifest is not None and _complete(manifest, step, steps):
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
    mine = local_manifest(manifest)
    if contract.verify_checkpoint(final) == mine:
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{contract.step_dirname(step)}.partial-{uuid.uuid4().hex[:8]}"

    def fetch(item: tuple[str, dict[str, Any]]) -> None:
        rel, meta = item
        target = tmp / rel
        key = file_key(step, rel, manifest)
        where = f"{rel} (stored with {key})" if rel in (manifest.get(STORED) or {}) else rel
        try:
            digest = store.get_file_sha256(key, target)  # hashed as it arrives: no second read
        except NotFound as e:
            raise CheckpointError(f"checkpoint step {step} in {store.uri}: {where} is missing") from e
        size = target.stat().st_size
        if size != meta["size"] or digest != meta["sha256"]:
            raise CheckpointError(f"checkpoint step {step} in {store.uri}: {where} does not match "
                                  f"its manifest (size {size}, expected {meta['size']}, or sha256)")

    try:
        _each(fetch, sorted(manifest["files"].items()))
        tmp.mkdir(parents=True, exist_ok=True)
        contract.write_manifest(tmp, mine)
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
    steps = _group_by_step(store)
    doomed = [c.step for c in complete if c.step not in keep]
    doomed += [s for s in steps if s not in complete_steps and s < newest]
    # Files a kept checkpoint's manifest names in its ``stored`` map outlive their own step.
    needed: dict[int, set[str]] = {}
    for c in complete:
        if c.step in keep:
            for ref in (c.manifest.get(STORED) or {}).values():
                where, name = _split_ref(ref)
                needed.setdefault(where, set()).add(name)
    deleted = []
    for step in sorted(doomed):
        files = set(steps.get(step, {}))
        if step in needed and not files - needed[step]:
            continue  # only content that kept checkpoints name is left here
        if contract.MANIFEST_NAME in files:  # never blind: a versioned bucket would keep a marker
            store.delete(join_key(step_prefix(step), contract.MANIFEST_NAME))
        if step in needed:
            for name in sorted(files - needed[step] - {contract.MANIFEST_NAME}):
                store.delete(join_key(step_prefix(step), name))
        else:
            store.delete_prefix(step_prefix(step) + "/")
        deleted.append(step)
        log.info("retention: deleted checkpoint step %d from %s", step, store.uri)
    return deleted


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
