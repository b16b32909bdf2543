"""SFTP sync that sends only what changed.

A file is unchanged when the remote copy has the same size and the same modification time (in
whole seconds); every file we send gets the local mtime, so a second sync of the same tree sends
nothing. The remote side is listed in one round trip (``find -printf``), folders are created in
one more, then only changed files travel. Syncing is idempotent: running it twice is safe and the
second run reports everything as skipped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from launcher.backends.base import SyncStats
from launcher.backends.ssh.client import Remote, q
from launcher.workdir import iter_files

CODE_PACKAGES = ("launcher", "trainers")  # what the agent and the bundled trainers need
_SKIP_PARTS = {"__pycache__"}


def remote_listing(remote: Remote, dest: str) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime seconds)`` of every file under ``dest`` (empty if absent)."""
    out = remote.run(f"[ -d {q(dest)} ] && find {q(dest)} -type f -printf '%P\\t%s\\t%T@\\n' || true",
                     timeout=60).stdout
    listing = {}
    for line in out.splitlines():
        parts = line.rsplit("\t", 2)
        if len(parts) == 3:
            listing[parts[0]] = (int(parts[1]), int(float(parts[2])))
    return listing


def unchanged(local: os.stat_result, remote: tuple[int, int] | None) -> bool:
    return remote is not None and remote == (local.st_size, int(local.st_mtime))


def sync_files(remote: Remote, files: Iterable[tuple[str, Path]], dest: str) -> SyncStats:
    """Send ``(relative path, local path)`` pairs under the remote folder ``dest``, skipping the
    unchanged ones. Returns files and bytes sent, files skipped."""
    stats = SyncStats()
    have = remote_listing(remote, dest)
    todo = []
    for rel, path in files:
        st = path.stat()
        if unchanged(st, have.get(rel)):
            stats.files_skipped += 1
        else:
            todo.append((rel, path, st))
    dirs = sorted({dest} | {f"{dest}/{os.path.dirname(rel)}" for rel, _, _ in todo if "/" in rel})
    remote.run("mkdir -p " + " ".join(q(d) for d in dirs), timeout=60)
    with remote.file_errors(f"sending files to {dest}"):
        sftp = remote.sftp()
        for rel, path, st in todo:
            target = f"{dest}/{rel}"
            sftp.put(str(path), target)
            sftp.chmod(target, stat.S_IMODE(st.st_mode))
            sftp.utime(target, (int(st.st_atime), int(st.st_mtime)))
            stats.files_sent += 1
            stats.bytes_sent += st.st_size
    return stats


def sync_dir(remote: Remote, local_dir: str | os.PathLike, dest: str) -> SyncStats:
    """Sync a workdir, honouring its ``.gitignore``/``.skyignore`` (see ``launcher.workdir``)."""
    return sync_files(remote, iter_files(local_dir), dest)


def code_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """The files of the local install that the machine needs: the ``launcher`` and ``trainers``
    packages (no bytecode), relative to the folder that holds them."""
    root = root or Path(__file__).resolve().parents[3]
    found = []
    for pkg in CODE_PACKAGES:
        if not (root / pkg).is_dir():
            continue
        for rel, path in iter_files(root / pkg):
            if _SKIP_PARTS.isdisjoint(rel.split("/")) and not rel.endswith(".pyc"):
                found.append((f"{pkg}/{rel}", path))
    return found
