"""What a launch kernel is made of: ``kernel-metadata.json``, its script, and the code bundles.

The script is ``kernel_script.py`` with its ``CONFIG`` literal filled in (see there for what it
does in the session). The config carries the public run spec and the *names* of the secrets to
read from the user's Kaggle secrets, never a value: ``kernel_config`` refuses a config in which a
given secret value appears.

Code travels through the store, not through Kaggle: the task's workdir as one deterministic
``tar.gz`` at ``<job prefix>/code/workdir-<sha>.tar.gz``, and the ``launcher`` (and ``trainers``)
packages as ``code/launcher-<sha>.tar.gz`` unless the workdir already holds them. The same files
give the same archive bytes, so an unchanged workdir is not uploaded again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pprint
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.agent import write_atomic
from launcher.backends.base import RunSpec
from launcher.workdir import iter_files

SCRIPT = Path(__file__).with_name("kernel_script.py")
CONFIG_LINE = "CONFIG: dict = {}  # filled in by launcher.backends.kaggle.kernel\n"
CODE_FILE = "launch_kernel.py"
METADATA_FILE = "kernel-metadata.json"
PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # the folder holding launcher/ (and trainers/)
PACKAGES = ("launcher", "trainers")
# Store settings that are not secret: they go into the kernel's config as they are. Every other
# variable the supervisor hands over as a secret is read from the user's Kaggle secrets by name.
PLAIN_STORE_VARS = frozenset({"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"})
OPTIONAL_SECRETS = ("AWS_SESSION_TOKEN",)  # short-lived: a Kaggle secret would hold long-lived keys
# Asked for even when the launching machine's keys come from a profile rather than the environment.
STORE_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MAX_SLUG = 50
RUN_ID_TAIL = re.compile(r"-[0-9a-f]{8}$")  # launcher.state makes run ids "<task name>-<8 hex>"


def task_name(run_id: str) -> str:
    """``"toy-1a2b3c4d" -> "toy"``: the task's name, which every job of the task shares."""
    return RUN_ID_TAIL.sub("", run_id) or run_id


def kernel_slug(run_id: str) -> str:
    """``"toy-1a2b3c4d" -> "launch-toy"``: one kernel per task name (and user), so that the secrets
    attached to it in the editor serve every job of the task. Lower-case letters, digits and
    dashes, at most 50 characters; a long name is cut and ends in a hash of the whole name."""
    name = task_name(run_id)
    slug = re.sub(r"[^a-z0-9]+", "-", f"launch-{name}".lower()).strip("-")
    if len(slug) > MAX_SLUG:
        slug = slug[:MAX_SLUG - 9].rstrip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return slug


def kernel_metadata(kernel_id: str, *, enable_gpu: bool, enable_internet: bool,
                    machine_shape: str | None = None, enable_tpu: bool = False) -> dict[str, Any]:
    """kernel-metadata.json of a private script kernel; its title slugifies to its id."""
    meta = {"id": kernel_id, "title": kernel_id.split("/", 1)[1], "code_file": CODE_FILE,
            "language": "python", "kernel_type": "script", "is_private": True,
            "enable_gpu": enable_gpu and not enable_tpu, "enable_tpu": enable_tpu,
            "enable_internet": enable_internet,
            "dataset_sources": [], "competition_sources": [], "kernel_sources": [], "model_sources": []}
    if machine_shape:
        meta["machine_shape"] = machine_shape
    return meta


def secret_names(spec: RunSpec, temporary: bool = False) -> list[str]:
    """The names a session reads from the user's Kaggle secrets: the store's keys (unless the
    kernel carries temporary ones) and every secret the task declares."""
    names = {k for k in spec.secrets if k not in PLAIN_STORE_VARS}
    if temporary:
        return sorted(names - {*STORE_SECRETS, *OPTIONAL_SECRETS})
    return sorted(names | set(STORE_SECRETS))


def kernel_config(spec: RunSpec, *, bundles: list[dict[str, str]], pythonpath: list[str],
                  workdir: str | None, session_limit: float, margin: float,
                  control_interval: float, store_credentials: dict[str, str] | None = None) -> dict[str, Any]:
    """The CONFIG of one attempt's script. The task's secret values stay out (checked);
    ``store_credentials`` (short-lived, scoped to the job's prefix) go in when given."""
    public = spec.public_dict()
    public["workdir"] = None  # the script sets it, with the deadline, when the session starts
    public["deadline"] = None
    temporary = store_credentials is not None
    config = {
        "job_id": spec.job_id, "attempt": spec.attempt, "store_uri": spec.store_uri,
        "store_env": {k: v for k, v in sorted(spec.secrets.items()) if k in PLAIN_STORE_VARS},
        "secret_names": secret_names(spec, temporary),
        "optional_secrets": [] if temporary else list(OPTIONAL_SECRETS),
        "store_credentials": dict(store_credentials or {}),
        "bundles": bundles, "pythonpath": pythonpath, "workdir": workdir,
        "session_limit": float(session_limit), "margin": float(margin),
        "control_interval": float(control_interval), "spec": public,
    }
    text = json.dumps(config)
    for key, value in spec.secrets.items():
        if key not in PLAIN_STORE_VARS and len(value or "") >= 8 and value in text:
            raise ValueError(f"the value of secret {key} would be written into the kernel")
    return config


def check_config(names: list[str], job_id: str, attempt: int) -> dict[str, Any]:
    """The CONFIG of a *check* version: it only reads ``names`` from the Kaggle secrets and ends
    (complete: all attached; error: some are not). See ``attachments``."""
    return {"check_only": True, "job_id": job_id, "attempt": attempt, "secret_names": sorted(names),
            "optional_secrets": [], "session_limit": 600.0, "margin": 0.0}


def kernel_source(config: dict[str, Any]) -> str:
    source = SCRIPT.read_text()
    if CONFIG_LINE not in source:
        raise RuntimeError(f"{SCRIPT} lost its CONFIG line")
    return source.replace(CONFIG_LINE, f"CONFIG: dict = {pprint.pformat(config, width=100, sort_dicts=True)}\n", 1)


def write_kernel(folder: Path, metadata: dict[str, Any], source: str) -> Path:
    """The kernel's folder as ``kaggle kernels push`` takes it; the source readable by its owner
    only (with temporary credentials it carries them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    write_atomic(folder / CODE_FILE, source, mode=0o600)
    return folder


# --- code bundles ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    kind: str  # "workdir" or "launcher"
    path: Path  # the archive on this machine
    sha256: str
    files: int
    bytes: int

    @property
    def key(self) -> str:
        return f"code/{self.kind}-{self.sha256[:16]}.tar.gz"


def make_bundle(kind: str, files: Iterable[tuple[str, Path]], dest_dir: Path) -> Bundle:
    """A deterministic tar.gz of ``(relative name, path)`` pairs: sorted, no times or owners."""
    raw = io.BytesIO()
    n = size = 0
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for rel, path in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = path.stat().st_mode & 0o777
            with open(path, "rb") as f:
                tar.addfile(info, f)
            n += 1
            size += info.size
    data = raw.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{kind}-{sha[:16]}.tar.gz"
    path.write_bytes(data)
    return Bundle(kind, path, sha, n, size)


def package_files(root: Path = PACKAGE_ROOT) -> list[tuple[str, Path]]:
    """The launcher's own code (``launcher/`` and, when present, ``trainers/``), without caches."""
    out = []
    for pkg in PACKAGES:
        base = root / pkg
        for p in sorted(base.rglob("*")) if base.is_dir() else []:
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                out.append((p.relative_to(root).as_posix(), p))
    return out


def make_bundles(workdir: str | None, dest_dir: Path) -> list[Bundle]:
    """The workdir's bundle (if any) and, unless the workdir holds ``launcher/agent.py``, the
    launcher's."""
    bundles = []
    if workdir:
        bundles.append(make_bundle("workdir", iter_files(workdir), dest_dir))
    if not (workdir and (Path(workdir) / "launcher" / "agent.py").is_file()):
        bundles.append(make_bundle("launcher", package_files(), dest_dir))
    return bundles


def layout(bundles: list[dict[str, Any]]) -> tuple[list[dict[str, str]], list[str], str | None]:
    """For the script: where each bundle is unpacked, the PYTHONPATH (relative to the session's
    root) and the workdir. Takes the handle's bundle records (``kind``, ``key``)."""
    unpack = [{"key": b["key"], "into": "workdir" if b["kind"] == "workdir" else "code"} for b in bundles]
    kinds = {b["kind"] for b in bundles}
    pythonpath = ["code"] if "launcher" in kinds else ["workdir"]
    return unpack, pythonpath, ("workdir" if "workdir" in kinds else None)
