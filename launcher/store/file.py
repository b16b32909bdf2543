"""``file://`` store: a local folder, the embedded default.

Writes go to a hidden temp file next to the target and are renamed into place, so a reader (or a
crash) never sees half a file. Temp files are invisible to :meth:`FileStore.list`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from launcher.store.base import NotFound, ObjectInfo, ObjectStore, StoreError, check_key, join_key

_TMP_RE = re.compile(r"^\..*\.launch-tmp-[0-9a-f]{32}$")


def _tmp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.launch-tmp-{uuid.uuid4().hex}")


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class FileStore(ObjectStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.uri = "file://" + self.root.as_posix()

    @classmethod
    def from_uri(cls, uri: str) -> FileStore:
        path = uri[len("file://"):]
        if not path:
            raise StoreError(f"invalid store URI {uri!r}: expected file:///absolute/folder")
        return cls(path)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, local: str | os.PathLike, key: str) -> None:
        try:
            _atomic_copy(Path(local), self._path(key))
        except FileNotFoundError as e:
            raise StoreError(f"cannot upload {local}: {e.strerror}") from e
        except OSError as e:
            raise StoreError(f"cannot write {self.uri}/{key}: {e}") from e

    def get_file(self, key: str, local: str | os.PathLike) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.uri}/{key} does not exist")
        try:
            _atomic_copy(src, Path(local))
        except OSError as e:
            raise StoreError(f"cannot download {self.uri}/{key} to {local}: {e}") from e

    def get_file_sha256(self, key: str, local: str | os.PathLike) -> str:
        """One pass: the copy is hashed as it is written."""
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.uri}/{key} does not exist")
        dst = Path(local)
        tmp = _tmp_path(dst)
        h = hashlib.sha256()
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(4 << 20):
                    h.update(chunk)
                    fout.write(chunk)
            os.replace(tmp, dst)
        except OSError as e:
            raise StoreError(f"cannot download {self.uri}/{key} to {local}: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)
        return h.hexdigest()

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        tmp = _tmp_path(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as e:
            raise StoreError(f"cannot write {self.uri}/{key}: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise NotFound(f"{self.uri}/{key} does not exist") from e
        except OSError as e:
            raise StoreError(f"cannot read {self.uri}/{key}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # Walk only the folder the prefix names, then filter by the plain string prefix.
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir():
            return []
        found = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if _TMP_RE.match(name):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = path.stat()
                    except FileNotFoundError:  # deleted while we walked
                        continue
                    found.append(ObjectInfo(key, st.st_size, st.st_mtime))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as e:
            raise StoreError(f"cannot delete {self.uri}/{key}: {e}") from e

    def delete_prefix(self, prefix: str) -> int:
        objects = self.list(prefix)
        for obj in objects:
            self.delete(obj.key)
        self._prune_empty_dirs(prefix)
        return len(objects)

    def _prune_empty_dirs(self, prefix: str) -> None:
        top = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not top.is_dir():
            return
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            path = Path(dirpath)
            if path != self.root and path.relative_to(self.root).as_posix().startswith(prefix.rstrip("/")):
                try:
                    path.rmdir()
                except OSError:
                    pass  # not empty: something else lives there

    def child(self, prefix: str) -> FileStore:
        return FileStore(self.root / check_key(join_key(prefix)))
