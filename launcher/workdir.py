"""Which files of a task's workdir travel to the machine.

SkyPilot's rule: if ``.skyignore`` exists in the workdir it alone decides, otherwise
``.gitignore`` does. ``.git`` never travels. Patterns follow gitignore: ``#`` comments, ``!``
negation, a trailing ``/`` for folders only, a ``/`` inside or at the start anchors the pattern to
the workdir, ``**`` matches across folders. (Nested .gitignore files are not read.)
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ALWAYS_IGNORED = (".git/",)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern
    negate: bool
    dir_only: bool


def _compile(line: str) -> _Pattern | None:
    line = line.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return None
    line = line.rstrip()
    negate = line.startswith("!")
    if negate:
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    anchored = "/" in line
    line = line.lstrip("/")
    parts = []
    i = 0
    while i < len(line):
        if line.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif line.startswith("/**", i) and i + 3 == len(line):
            parts.append("/.*")
            i += 3
        elif line[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif line[i] == "?":
            parts.append("[^/]")
            i += 1
        elif line[i] == "[":
            j = line.find("]", i)
            if j == -1:
                parts.append(re.escape(line[i]))
                i += 1
            else:
                parts.append(fnmatch.translate(line[i:j + 1])[4:-3])
                i = j + 1
        else:
            parts.append(re.escape(line[i]))
            i += 1
    body = "".join(parts)
    regex = ("^" if anchored else "^(?:.*/)?") + body + "$"
    return _Pattern(re.compile(regex), negate, dir_only)


class IgnoreRules:
    def __init__(self, lines: list[str]):
        self.patterns = [p for p in (_compile(x) for x in [*ALWAYS_IGNORED, *lines]) if p]

    @classmethod
    def for_workdir(cls, root: str | os.PathLike) -> "IgnoreRules":
        root = Path(root)
        for name in (".skyignore", ".gitignore"):
            f = root / name
            if f.is_file():
                return cls(f.read_text().splitlines())
        return cls([])

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        for p in self.patterns:
            if p.dir_only and not is_dir:
                continue
            if p.regex.match(rel):
                result = not p.negate
        return result


def iter_files(root: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, absolute path)`` of every file of the workdir that travels.
    Ignored folders are not descended into; symlinks to files are followed, to folders not."""
    root = Path(root)
    rules = IgnoreRules.for_workdir(root)
    for dirpath, dirnames, filenames in os.walk(root):
        reldir = Path(dirpath).relative_to(root).as_posix()
        reldir = "" if reldir == "." else reldir + "/"
        dirnames[:] = sorted(d for d in dirnames if not rules.ignored(reldir + d, True))
        for f in sorted(filenames):
            rel = reldir + f
            p = Path(dirpath) / f
            if not rules.ignored(rel, False) and p.is_file():
                yield rel, p
