"""The SFTP sync sends only what changed; a local stand-in for the remote side runs the same
shell commands and file calls on this machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from launcher.backends.ssh import transfer
from launcher.backends.ssh.client import CommandError, Result


class LocalSFTP:
    def __init__(self):
        self.sent: list[str] = []

    def put(self, local, remote):
        self.sent.append(remote)
        shutil.copyfile(local, remote)

    def chmod(self, path, mode):
        os.chmod(path, mode)

    def utime(self, path, times):
        os.utime(path, times)


class LocalRemote:
    """What ``transfer`` needs of a Remote, run on this machine."""

    def __init__(self):
        self._sftp = LocalSFTP()

    def run(self, command, *, timeout=30.0, stdin=None, check=True):
        r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise CommandError("local", command, r.returncode, r.stdout + r.stderr)
        return Result(r.returncode, r.stdout, r.stderr)

    def sftp(self):
        return self._sftp

    def file_errors(self, what):
        return contextlib.nullcontext()


def make_tree(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("a = 1\n")
    (root / "pkg" / "sub" / "b.py").write_text("b = 2\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "data.bin").write_bytes(b"x" * 1000)
    (root / ".gitignore").write_text("*.bin\n")


def test_second_sync_sends_nothing(tmp_path):
    make_tree(tmp_path / "src")
    remote, dest = LocalRemote(), str(tmp_path / "dest")
    first = transfer.sync_dir(remote, tmp_path / "src", dest)
    assert (first.files_sent, first.files_skipped) == (5 - 1, 0)  # data.bin is ignored
    assert first.bytes_sent == sum(p.stat().st_size for p in (tmp_path / "dest").rglob("*") if p.is_file())
    second = transfer.sync_dir(remote, tmp_path / "src", dest)
    assert (second.files_sent, second.bytes_sent, second.files_skipped) == (0, 0, 4)
    assert not (tmp_path / "dest" / "data.bin").exists()
    assert os.access(tmp_path / "dest" / "run.sh", os.X_OK)


def test_only_changed_files_travel(tmp_path):
    make_tree(tmp_path / "src")
    remote, dest = LocalRemote(), str(tmp_path / "dest")
    transfer.sync_dir(remote, tmp_path / "src", dest)
    remote.sftp().sent.clear()
    a = tmp_path / "src" / "pkg" / "a.py"
    a.write_text("a = 100\n")  # a different size
    (tmp_path / "src" / "new.txt").write_text("new")
    stats = transfer.sync_dir(remote, tmp_path / "src", dest)
    assert sorted(Path(p).name for p in remote.sftp().sent) == ["a.py", "new.txt"]
    assert (stats.files_sent, stats.files_skipped) == (2, 3)
    assert (tmp_path / "dest" / "pkg" / "a.py").read_text() == "a = 100\n"


def test_same_size_but_newer_file_is_sent(tmp_path):
    make_tree(tmp_path / "src")
    remote, dest = LocalRemote(), str(tmp_path / "dest")
    transfer.sync_dir(remote, tmp_path / "src", dest)
    b = tmp_path / "src" / "pkg" / "sub" / "b.py"
    b.write_text("b = 3\n")
    os.utime(b, (b.stat().st_atime, b.stat().st_mtime + 5))
    assert transfer.sync_dir(remote, tmp_path / "src", dest).files_sent == 1


def test_code_files_are_the_packages_without_bytecode(tmp_path):
    (tmp_path / "launcher" / "__pycache__").mkdir(parents=True)
    (tmp_path / "launcher" / "__init__.py").write_text("")
    (tmp_path / "launcher" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "t.py").write_text("")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    assert [rel for rel, _ in transfer.code_files(tmp_path)] == ["launcher/__init__.py", "trainers/t.py"]
