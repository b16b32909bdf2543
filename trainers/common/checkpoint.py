"""Checkpoint folders on the local disk: write (in the background), find, load, prune.

Layout (``launcher.contract``): ``<root>/step-00001234/state.pt`` then ``MANIFEST.json``, written
last and atomically. A folder is a checkpoint only once its manifest exists and verifies; the
launcher's agent uploads every committed folder it sees, and a resume never loads anything else.
So a process killed in the middle of a write leaves a folder that is simply ignored.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import torch

from launcher import contract
from trainers.common.errors import HarnessError
from trainers.common.state import KEY_CONFIG, KEY_EXTRA, STATE_FILE


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions): the run should not go on
    believing its progress is saved."""


def write_checkpoint(root: Path, state: dict[str, Any], *, step: int, epoch: float,
                     metrics: dict[str, Any] | None, fingerprint: str,
                     best: dict[str, Any] | None, reason: str,
                     files: dict[str, Any] | None = None) -> Path:
    """Write ``state`` as the checkpoint of ``step`` under ``root``; returns its folder.
    ``files``: more objects to save next to it, by file name (the other ranks' RNG states).

    Order matters: any stale manifest goes first, then the files (each through a ``.tmp`` name,
    fsynced), then the manifest. A folder left at the same step by a killed attempt is cleared,
    which is safe because a resume never starts below a committed step: such a folder is torn.
    """
    folder = Path(root) / contract.step_dirname(step)
    if folder.exists():
        (folder / contract.MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, obj in {**(files or {}), STATE_FILE: state}.items():
        tmp = folder / (name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
    contract.hook_point("save", f"step {step}")  # a fire drill may stop the machine right here
    manifest = contract.build_manifest(folder, step=step, epoch=epoch, metrics=metrics,
                                       fingerprint=fingerprint, best=best)
    manifest["reason"] = reason  # periodic / epoch / preempted / deadline / final (for people)
    contract.write_manifest(folder, manifest)
    return folder


def find_resume(root: Path) -> tuple[int, Path, dict[str, Any]] | None:
    """The highest step whose manifest verifies (sizes and sha256), or None. Folders without a
    manifest, or whose files do not match it, are skipped: they are never loaded."""
    return contract.latest_checkpoint(root)


def peek_extra(root: Path) -> dict[str, Any] | None:
    """The trainer's own state (``KEY_EXTRA``) in the latest verified checkpoint under ``root``,
    or None without one. Memory-mapped, so only that small part is read: a trainer learns what
    to build (which architecture, which vocabulary) before the real resume loads the rest."""
    found = peek_state(root)
    return None if found is None else found[1][KEY_EXTRA]


def load_state(folder: Path) -> dict[str, Any]:
    """The state dict of a verified checkpoint folder, on the CPU, without running any code."""
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def peek_state(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest verified checkpoint under ``root``, memory-mapped: ``(folder, state)``, or
    None. For what a trainer must know before ``Harness.resume()`` (which stage to build)."""
    found = find_resume(root)
    if found is None:
        return None
    return found[1], torch.load(Path(found[1]) / STATE_FILE, map_location="cpu",
                                weights_only=True, mmap=True)


def check_trainer(folder: Path, state: dict[str, Any], trainer: str) -> None:
    """A one-line ``HarnessError`` unless ``state`` was written by ``trainer`` (which records
    its name as ``extra["trainer"]``)."""
    extra = state.get(KEY_EXTRA) if isinstance(state, dict) else None
    if not isinstance(extra, dict) or extra.get("trainer") != trainer:
        keys = ", ".join(sorted((state.get(KEY_CONFIG) or {}) if isinstance(state, dict) else {}))
        raise HarnessError(f"{folder}: not a checkpoint of the {trainer} trainer "
                           f"(config keys: {keys or 'none'})")


def open_checkpoint(path: str | os.PathLike, trainer: str) -> tuple[Path, dict[str, Any]]:
    """``(folder, state)`` of a checkpoint of ``trainer``: ``path`` is one verified ``step-*``
    folder or a folder of them (the newest verified one is taken). Every problem is a
    one-line ``HarnessError`` naming the folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HarnessError(f"{path}: no such checkpoint folder")
    if contract.read_manifest(path) is None:
        found = contract.latest_checkpoint(path)
        if found is None:
            raise HarnessError(f"{path}: no verified checkpoint (a step-* folder with its "
                               f"MANIFEST.json) here")
        path = found[1]
    try:
        state = load_state(path)
    except Exception as e:
        raise HarnessError(f"{path}: cannot read the checkpoint ({e})") from e
    check_trainer(path, state, trainer)
    return path, state


def _best_step(committed: list[tuple[int, dict[str, Any]]]) -> int | None:
    """The step of the checkpoint with the best ``best.value``; on a tie the earliest, which is
    the one whose weights the value was measured on (later ones carry it forward)."""
    scored = [(s, m["best"]) for s, m in committed
              if isinstance(m.get("best"), dict) and m["best"].get("value") is not None]
    if not scored:
        return None
    sign = -1.0 if scored[0][1].get("mode", "max") == "max" else 1.0
    return min(scored, key=lambda sb: (sign * float(sb[1]["value"]), sb[0]))[0]


def prune(root: Path, keep_last: int = 2) -> list[int]:
    """Delete committed checkpoints other than the last ``keep_last`` and the best; returns the
    deleted steps. Only committed folders older than the newest are touched: a folder without a
    manifest may be the one being written right now (or a torn one that nothing will load)."""
    committed = []
    for step, path in contract.local_checkpoints(root):
        m = contract.read_manifest(path)
        if m is not None:
            committed.append((step, m))
    keep = {s for s, _ in committed[:keep_last]}
    best = _best_step(committed)
    if best is not None:
        keep.add(best)
    deleted = []
    for step, _ in committed:
        if step not in keep:
            folder = Path(root) / contract.step_dirname(step)
            (folder / contract.MANIFEST_NAME).unlink(missing_ok=True)  # uncommit first
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(step)
    return deleted


class CheckpointWriter:
    """Writes checkpoints in a background thread, one at a time.

    ``save()`` first waits for the previous write (so at most one is in flight and host memory
    holds at most two snapshots), then returns at once unless ``blocking``. The thread is not a
    daemon: a normal exit waits for the write to finish instead of leaving a torn folder. A write
    error is raised by the next ``save()`` or ``wait()``, in the training thread.
    """

    def __init__(self, root: Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last
        self.last_write_seconds: float | None = None
        self.last_committed: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def wait(self) -> None:
        """Block until the write in flight (if any) is committed. Safe to call any time."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint under {self.root} failed: {err}") from err

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def save(self, state: dict[str, Any], *, blocking: bool = False, **meta: Any) -> None:
        """Write ``state`` (already a host snapshot, see ``state.to_host``). ``meta`` is passed
        to ``write_checkpoint``: step, epoch, metrics, fingerprint, best, reason."""
        self.wait()
        if blocking:
            self._write(state, meta)
            self.wait()
            return
        self._thread = threading.Thread(target=self._write, args=(state, meta),
                                        name=f"checkpoint-{meta['step']}", daemon=False)
        self._thread.start()

    def _write(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            write_checkpoint(self.root, state, **meta)
            self.last_committed = meta["step"]
            prune(self.root, self.keep_last)
        except BaseException as e:  # handed to the training thread by wait()
            self._error = e
        self.last_write_seconds = time.perf_counter() - t0
