"""The contract shared by the launcher and every trainer: environment names and checkpoint layout.

This is the only module of ``launcher`` that trainers import. It uses the standard library only,
so a trainer (or a user's own script) can follow the contract without installing anything else.

Store layout under a job's prefix (a URI such as ``s3://bucket/runs/quickstart-1a2b3c4d``)::

    ckpt/step-00001234/<files>        the checkpoint's files, uploaded first
    ckpt/step-00001234/MANIFEST.json  written last; a checkpoint exists only when this does
    logs/attempt-1.log                each attempt's output, uploaded as it grows
    logs/attempt-1.exit               the attempt's exit code, once it ended
    logs/attempt-1.json               how the attempt started (resumed step, metrics lines then)
    logs/attempt-1.end.json           how it ended (state, reason, price), from the supervisor
    metrics.jsonl                     one JSON object per line, uploaded as it grows
    gpu.jsonl                         machine samples (GPUs, CPU/RAM) every 10 s, from the agent
    outputs/...                       the trainer's results (history.csv, results.json, figures)
    DONE                              written once the run exited 0

On the machine, ``LAUNCH_CHECKPOINT_DIR`` mirrors ``ckpt/`` (it holds ``step-*`` folders) and
``LAUNCH_OUTPUT_DIR`` mirrors the job prefix's ``metrics.jsonl`` and ``outputs/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

# --- environment seen by the run -------------------------------------------------------------
ENV_JOB_ID = "LAUNCH_JOB_ID"  # stable across attempts (a string, e.g. "quickstart-1a2b3c4d")
ENV_ATTEMPT = "LAUNCH_ATTEMPT"  # 1, 2, ... one per machine the job has run on
ENV_CHECKPOINT_DIR = "LAUNCH_CHECKPOINT_DIR"  # local folder of step-* checkpoints, synced by the backend
ENV_CHECKPOINT_URI = "LAUNCH_CHECKPOINT_URI"  # the store URI of the same checkpoints (…/ckpt)
ENV_OUTPUT_DIR = "LAUNCH_OUTPUT_DIR"  # local folder for metrics.jsonl and results, synced up
ENV_DEADLINE = "LAUNCH_DEADLINE"  # unix time: checkpoint and exit (code PREEMPTED) before it
ENV_FORCE_RESUME = "LAUNCH_FORCE_RESUME"  # "1": resume even if the config fingerprint differs
ENV_HOOK_DIR = "LAUNCH_HOOK_DIR"  # fire drills: the folder where pause points are armed (hook_point)

# The exit code by which a run says "I was told to stop (preemption notice or deadline), my state
# is saved, relaunch me". Any other non-zero code is an error. 75 is EX_TEMPFAIL in sysexits.h.
EXIT_PREEMPTED = 75
# The agent's preflight found the machine without the accelerators the task asks for (a setup
# failure of that machine, not a user error). 78 is EX_CONFIG in sysexits.h.
EXIT_PREFLIGHT = 78

# --- store layout -----------------------------------------------------------------------------
CKPT_PREFIX = "ckpt/"
LOGS_PREFIX = "logs/"
OUTPUTS_PREFIX = "outputs/"
METRICS_NAME = "metrics.jsonl"
SAMPLES_NAME = "gpu.jsonl"  # machine samples (GPUs, CPU/RAM), written by the agent
DONE_NAME = "DONE"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1

# The path at which a task declares its checkpoint store as a storage file mount:
#   file_mounts: {/checkpoints: {source: s3://bucket/prefix, mode: MOUNT_CACHED}}
CHECKPOINT_MOUNT = "/checkpoints"

_STEP_RE = re.compile(r"^step-(\d{8,})$")


def step_dirname(step: int) -> str:
    """``1234 -> "step-00001234"``; zero-padded so names sort by step."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step-{step:08d}"


def parse_step(name: str) -> int | None:
    """The step of a checkpoint folder name, or None if the name is not one."""
    m = _STEP_RE.match(name.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def log_name(attempt: int) -> str:
    return f"attempt-{attempt}.log"


def exit_name(attempt: int) -> str:
    return f"attempt-{attempt}.exit"


def drill_name(attempt: int) -> str:
    """``logs/attempt-N.drill``: the fire drill this attempt's agent fired (JSON: drill, step)."""
    return f"attempt-{attempt}.drill"


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(config: Any) -> str:
    """A short stable hash of a JSON-able config; resuming under another fingerprint is refused."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_manifest(
    ckpt_dir: str | os.PathLike,
    *,
    step: int,
    epoch: int | float = 0,
    metrics: dict[str, Any] | None = None,
    fingerprint: str = "",
    best: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe every file under ``ckpt_dir`` (name, size, sha256) plus the training position.

    ``best`` optionally names the metric that retention keeps the best checkpoint by:
    ``{"key": "val_acc", "mode": "max", "value": 0.71}``.
    """
    root = Path(ckpt_dir)
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.endswith(".tmp"):
            rel = p.relative_to(root).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return {
        "format": MANIFEST_FORMAT,
        "step": int(step),
        "epoch": epoch,
        "files": files,
        "metrics": metrics or {},
        "fingerprint": fingerprint,
        "best": best,
        "created": time.time(),
    }


def write_manifest(ckpt_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write MANIFEST.json atomically (temp file, fsync, rename). Call it after every file is
    written: its presence is what makes the checkpoint exist."""
    path = Path(ckpt_dir) / MANIFEST_NAME
    tmp = path.with_name(MANIFEST_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_manifest(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        with open(Path(ckpt_dir) / MANIFEST_NAME) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT else None


def verify_checkpoint(ckpt_dir: str | os.PathLike, *, check_hash: bool = True) -> dict[str, Any] | None:
    """The manifest of a complete, intact checkpoint folder; None when any file is missing, has
    another size, or (with ``check_hash``) another sha256."""
    root = Path(ckpt_dir)
    m = read_manifest(root)
    if m is None:
        return None
    for rel, meta in m.get("files", {}).items():
        p = root / rel
        try:
            if p.stat().st_size != meta["size"]:
                return None
        except OSError:
            return None
        if check_hash and sha256_file(p) != meta["sha256"]:
            return None
    return m


def local_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-*`` folder under root, highest step first (unverified)."""
    r = Path(root)
    if not r.is_dir():
        return []
    found = [(s, p) for p in r.iterdir() if p.is_dir() and (s := parse_step(p.name)) is not None]
    return sorted(found, reverse=True)


def latest_checkpoint(root: str | os.PathLike) -> tuple[int, Path, dict[str, Any]] | None:
    """The highest-step checkpoint under ``root`` whose manifest verifies, or None."""
    for step, path in local_checkpoints(root):
        m = verify_checkpoint(path)
        if m is not None:
            return step, path, m
    return None


def checkpoint_root_from_env() -> Path | None:
    """The local checkpoint folder from the environment: ``LAUNCH_CHECKPOINT_DIR``, or a
    ``file://`` ``LAUNCH_CHECKPOINT_URI``. None when neither is set (a plain local run)."""
    d = os.environ.get(ENV_CHECKPOINT_DIR)
    if d:
        return Path(d)
    uri = os.environ.get(ENV_CHECKPOINT_URI, "")
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if uri:
        raise RuntimeError(
            f"{ENV_CHECKPOINT_URI}={uri} is a remote store; run under `launch` (which syncs it to "
            f"{ENV_CHECKPOINT_DIR}) or set {ENV_CHECKPOINT_DIR} to a local folder"
        )
    return None


def deadline_from_env() -> float | None:
    v = os.environ.get(ENV_DEADLINE)
    return float(v) if v else None


# --- many processes (torchrun) ---------------------------------------------------------------
def rank_rng_name(rank: int) -> str:
    """The file of a checkpoint folder holding the RNG state of ``rank`` (ranks 1.. under torchrun;
    rank 0's is in state.pt)."""
    return f"rng-rank-{int(rank):05d}.pt"


# Written into $LAUNCH_HOOK_DIR by a run that stopped with its state saved (a notice or its
# deadline): torchrun exits 1 whatever its workers' codes were, so the agent reads the stop here.
STOPPED_NAME = "stopped"


def note_stopped(reason: str, step: int, hook_dir: str | os.PathLike | None = None) -> None:
    """Say that the run stopped at ``step`` with its state saved, for the agent (no-op outside
    ``launch``)."""
    root = hook_dir or os.environ.get(ENV_HOOK_DIR)
    if not root:
        return
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = Path(root) / (STOPPED_NAME + ".tmp")
        tmp.write_text(json.dumps({"reason": reason, "step": int(step), "time": time.time()}))
        os.replace(tmp, Path(root) / STOPPED_NAME)
    except OSError:
        pass


# --- pause points for fire drills --------------------------------------------------------------
# ``save``: the trainer wrote a checkpoint's files, not yet its manifest. ``upload``: the agent
# put a checkpoint's files in the store, not yet its manifest. ``download``: the agent fetched the
# checkpoint to resume from and has not started the run yet.
HOOK_PHASES = ("save", "upload", "download")


def hook_point(phase: str, detail: str = "", hook_dir: str | os.PathLike | None = None,
               timeout: float = 120.0, poll: float = 0.02) -> bool:
    """Pause here if a fire drill armed this phase; otherwise return False at once (one stat).

    Armed means ``<hook_dir>/armed-<phase>`` exists (``hook_dir`` defaults to $LAUNCH_HOOK_DIR,
    set by the agent only while a drill is pending). The arming is consumed, ``at-<phase>`` is
    written (holding ``detail``), and the caller waits until that file is removed (the drill was
    delivered and let it go) or ``timeout`` seconds pass, then goes on. A kill drill ends the
    process while it waits, which is the point: a machine lost in the middle of this phase.
    Returns whether it paused."""
    root = hook_dir or os.environ.get(ENV_HOOK_DIR)
    if not root:
        return False
    armed, at = Path(root) / f"armed-{phase}", Path(root) / f"at-{phase}"
    try:
        os.unlink(armed)
    except OSError:
        return False
    tmp = at.with_name(at.name + ".tmp")
    tmp.write_text(detail)
    os.replace(tmp, at)
    deadline = time.monotonic() + timeout
    while at.exists() and time.monotonic() < deadline:
        time.sleep(poll)
    at.unlink(missing_ok=True)
    return True
