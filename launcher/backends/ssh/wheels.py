"""Wheels for hosts that cannot reach a package index, built here and sent over SFTP.

``infra/bootstrap.sh ROOT --probe`` reports a host's Python (version, implementation, wheel ABIs
and platforms, best first), the packages it lacks and whether an index answers it. For a host that
lacks packages and reaches no index, :func:`wheel_cache` runs ``pip download`` on this machine for
that Python and platform (with this machine's own pip configuration, so a local index or proxy
configured here is used) into ``$LAUNCH_HOME/wheels/<python>-<platform>/<set>/``. A folder is
complete once its ``COMPLETE`` marker exists; a complete one is reused, so each set of packages
for each kind of host is downloaded once. The host then installs from those files alone
(``bootstrap.sh ROOT --wheels DIR``, i.e. ``pip install --no-index --find-links DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from launcher.backends.base import BackendError
from launcher.state import launch_home

PROBE_PREFIX = "LAUNCH_PROBE "
COMPLETE = "COMPLETE"
TAIL_LINES = 15


def parse_probe(output: str) -> dict[str, Any]:
    """The JSON of the ``LAUNCH_PROBE`` line in ``bootstrap.sh --probe``'s output."""
    for line in reversed(output.splitlines()):
        if line.startswith(PROBE_PREFIX):
            return json.loads(line[len(PROBE_PREFIX):])
    raise BackendError(f"bootstrap.sh --probe printed no {PROBE_PREFIX.strip()} line:\n{output[-2000:]}")


def needs_wheels(probe: dict[str, Any]) -> bool:
    """True when the host lacks packages and no index answers it."""
    return bool(probe.get("missing")) and probe.get("index") is False


def host_tag(probe: dict[str, Any]) -> str:
    """``cp311-manylinux_2_36_x86_64``: the host's Python and its best platform."""
    platforms = probe.get("platforms") or ["any"]
    return f"{probe['implementation']}{probe['python'].replace('.', '')}-{platforms[0]}"


def download_args(probe: dict[str, Any], dest: Path, constraints: Path) -> list[str]:
    """The ``pip download`` command for the host's missing packages, wheels only."""
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
            "--python-version", probe["python"], "--implementation", probe["implementation"],
            "--progress-bar", "off", "-c", str(constraints)]
    for abi in probe.get("abis") or []:
        args += ["--abi", abi]
    for platform in probe.get("platforms") or []:
        args += ["--platform", platform]
    return args + sorted(probe["missing"])


def set_key(probe: dict[str, Any], constraints: Path) -> str:
    """Names one set of packages for one kind of host (same inputs, same folder)."""
    doc = {k: probe.get(k) for k in ("python", "implementation", "abis", "platforms")}
    doc["missing"] = sorted(probe["missing"])
    doc["constraints"] = constraints.read_text()
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def wheel_cache(probe: dict[str, Any], constraints: Path, host: str = "the host",
                timeout: float = 1800) -> Path:
    """The folder of wheels that gives the probed host its missing packages and their
    dependencies; downloaded now unless a complete one is cached. Raises BackendError naming the
    packages and pip's last lines when this machine cannot get them either. Safe to call from
    several processes at once: each downloads into its own temporary folder, the first rename
    wins."""
    final = launch_home() / "wheels" / host_tag(probe) / set_key(probe, constraints)
    if (final / COMPLETE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=final.parent))
    try:
        r = subprocess.run(download_args(probe, tmp, constraints), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-TAIL_LINES:])
            raise BackendError(f"{host} reaches no package index and lacks {', '.join(probe['missing'])}; "
                               f"`pip download` of their wheels on this machine failed "
                               f"(exit code {r.returncode}):\n{tail}")
        (tmp / "requirements.txt").write_text("\n".join(sorted(probe["missing"])) + "\n")
        (tmp / COMPLETE).write_text("")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same set first
            if not (final / COMPLETE).exists():
                raise
    except subprocess.TimeoutExpired:
        raise BackendError(f"`pip download` of {', '.join(probe['missing'])} for {host} ran past "
                           f"{timeout:.0f} s") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def wheel_files(folder: Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of every wheel in ``folder``, as ``transfer.sync_files`` takes them."""
    return [(p.name, p) for p in sorted(folder.glob("*.whl"))]
