"""Our task (``launcher.task.Task``) -> SkyPilot's task: the same YAML fields, plus our contract.

The task's own YAML is SkyPilot's format, so the mapping is mostly a pass-through; what it adds:

* **Resources.** The task's whole ``resources`` block, ``any_of``/``ordered`` included, so that
  SkyPilot's optimizer and failover choose among the options. The job's infra (``--infra``) pins
  every option, except ``skypilot`` which leaves the choice to SkyPilot.
* **Managed or not.** Any option with ``use_spot`` (or a declared ``job_recovery``, which only
  managed jobs have: it puts an on-demand task, on Slurm say, under SkyPilot's recovery too)
  makes the attempt a SkyPilot *managed job*
  (``sky.jobs.launch``): SkyPilot itself relaunches it after a preemption, and ``job_recovery`` is
  passed through with our preemption exit code (``contract.EXIT_PREEMPTED``) added to
  ``recover_on_exit_codes``, so a trainer that saved and stopped on a notice is relaunched by
  SkyPilot too. Otherwise it is a plain cluster (``sky.launch`` with autostop and ``down``).
* **The checkpoint store.** When the task declares no storage mount at ``/checkpoints``, the job's
  prefix in the store (``RunSpec.store_uri``, ``s3://...``) is mounted there ``MOUNT_CACHED``; a
  declared mount is left alone (the job's prefix is then a folder inside it). A ``file://`` store
  is not mounted: it is used in place, which works where the nodes share that filesystem (a Slurm
  cluster's shared home, a one-machine cluster).
* **Mounts of a folder in a bucket.** SkyPilot mounts (``MOUNT``, ``MOUNT_CACHED``) only whole
  buckets: ``s3://bucket/prefix`` is refused when the job launches (``StorageModeError``), yet it is
  how a task names its data or checkpoint folder, and how our store names a job. Such a mount
  becomes the bucket's root mounted under ``/launch-buckets/`` plus a symbolic link from the task's
  path to the folder in it, made at the start of ``setup`` and of ``run`` (with ``sudo -n`` where the
  parent folder is not writable); the contract's paths point into the mount itself.
* **The contract's environment.** ``LAUNCH_JOB_ID`` (our run id, stable across SkyPilot's
  recoveries *and* our own relaunches; SkyPilot's ``SKYPILOT_TASK_ID`` is there as well),
  ``LAUNCH_ATTEMPT``, ``LAUNCH_CHECKPOINT_DIR`` (``<mount>/ckpt``, the store layout's ``ckpt/``),
  ``LAUNCH_CHECKPOINT_URI`` and ``LAUNCH_OUTPUT_DIR`` (``<mount>``, where ``metrics.jsonl`` lives;
  the trainer's other results are moved into ``outputs/`` when the run ends).

The run is **not** wrapped by ``python -m launcher.agent``: on SkyPilot the storage mount is the
agent's sync (checkpoints go to the bucket as the trainer commits them; a resumed run finds them in
the mount), SkyPilot forwards the cancel and handles preemption, and the node then needs neither
our package nor store credentials. A few lines of bash (``wrap_run``) keep the rest of the agent's
store layout: the attempt's log in ``logs/attempt-N.log``, its exit code next to it, results in
``outputs/``, and ``DONE``.
"""

from __future__ import annotations

import copy
import os
import shlex
from dataclasses import dataclass
from typing import Any

from launcher import contract
from launcher.backends.base import BackendError, RunSpec
from launcher.task import Task

MOUNT_MODE = "MOUNT_CACHED"
MOUNTED_MODES = ("MOUNT", "MOUNT_CACHED")
# Where whole buckets are mounted when the task names a folder in one (see the module's notes).
BUCKET_ROOTS = "/launch-buckets"
# Schemes whose MOUNT SkyPilot refuses below the bucket (hf:// and https:// mount sub-paths;
# cos:// carries its region in the path and is left to SkyPilot).
_ROOT_ONLY_SCHEMES = ("s3", "gs", "r2", "oci", "nebius", "cw", "vastdata")
# Infra strings that leave the choice of cloud to SkyPilot.
UNPINNED_INFRAS = ("skypilot", "sky")
EXIT_CODE_SUFFIX = ".exit_code"


@dataclass
class SkyLaunch:
    """What to submit to SkyPilot for one attempt."""

    config: dict[str, Any]  # a SkyPilot task YAML, as a dict
    managed: bool  # True: sky.jobs.launch; False: sky.launch on a cluster
    checkpoint_dir: str
    output_dir: str


# --- resources --------------------------------------------------------------------------------


def resources_block(task: Task | None, option: dict[str, Any], infra: str) -> dict[str, Any]:
    """The ``resources`` mapping to hand SkyPilot: the task's whole block when there is a task
    (SkyPilot then picks among ``any_of``/``ordered``), else the one option, pinned to ``infra``."""
    if task is not None:
        block = task.resources.model_dump(exclude_none=True)
    else:
        block = {k: v for k, v in option.items() if k not in ("any_of", "ordered")}
    block = copy.deepcopy(block)
    if (infra or "").split("/", 1)[0].lower() not in UNPINNED_INFRAS:
        block["infra"] = infra
        for alt in block.get("any_of", []) + block.get("ordered", []):
            alt.pop("infra", None)
    return block


def options_of(block: dict[str, Any]) -> list[dict[str, Any]]:
    base = {k: v for k, v in block.items() if k not in ("any_of", "ordered")}
    alts = block.get("any_of") or block.get("ordered") or [{}]
    return [{**base, **alt} for alt in alts]


def is_managed(block: dict[str, Any]) -> bool:
    """Spot anywhere among the options, or a declared ``job_recovery`` (which only managed jobs
    have in SkyPilot) -> a managed job, whose recovery SkyPilot owns."""
    return any(o.get("use_spot") or o.get("job_recovery") is not None for o in options_of(block))


def with_preemption_recovery(block: dict[str, Any]) -> dict[str, Any]:
    """``job_recovery`` passed through, with our preemption exit code among
    ``recover_on_exit_codes`` (it relaunches without counting against ``max_restarts_on_errors``)."""
    block = copy.deepcopy(block)
    jr = block.get("job_recovery")
    jr = {"strategy": jr} if isinstance(jr, str) else dict(jr or {})
    codes = jr.get("recover_on_exit_codes")
    codes = [codes] if isinstance(codes, int) else list(codes or [])
    if contract.EXIT_PREEMPTED not in codes:
        codes.append(contract.EXIT_PREEMPTED)
    jr["recover_on_exit_codes"] = codes
    block["job_recovery"] = jr
    return block


# --- the store --------------------------------------------------------------------------------


def store_mount(file_mounts: dict[str, Any], store_uri: str) -> tuple[dict[str, Any], str]:
    """``(file_mounts, job_dir)``: the mounts with our store added when the task has none at
    ``/checkpoints``, and the folder on the node that holds the job's prefix."""
    mounts = copy.deepcopy(file_mounts)
    store_uri = (store_uri or "").rstrip("/")
    if store_uri.startswith("file://"):
        return mounts, store_uri[len("file://"):]  # used in place (a filesystem the nodes share)
    declared = mounts.get(contract.CHECKPOINT_MOUNT)
    if declared is None:
        if store_uri:
            mounts[contract.CHECKPOINT_MOUNT] = {"source": store_uri, "mode": MOUNT_MODE}
        return mounts, contract.CHECKPOINT_MOUNT
    source = declared.get("source") if isinstance(declared, dict) else declared
    source = source.rstrip("/") if isinstance(source, str) else ""
    if not store_uri:
        return mounts, contract.CHECKPOINT_MOUNT
    if store_uri == source or (source and store_uri.startswith(source + "/")):
        return mounts, contract.CHECKPOINT_MOUNT + store_uri[len(source):]
    raise BackendError(f"the task mounts {source or declared!r} at {contract.CHECKPOINT_MOUNT} but the "
                       f"job's store is {store_uri}: drop --store/LAUNCH_STORE or the task's mount")


def bucket_root_mounts(mounts: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``(mounts, links)``: every MOUNT/MOUNT_CACHED of a folder inside a bucket replaced by the
    bucket's root mounted under ``BUCKET_ROOTS`` (one per bucket and mode), and the
    ``(path, folder in the root mount)`` links that stand in for the original mounts."""
    out: dict[str, Any] = {}
    links: list[tuple[str, str]] = []
    for dst, m in mounts.items():
        source = m.get("source") if isinstance(m, dict) else None
        mode = str(m.get("mode") or "MOUNT").upper() if isinstance(m, dict) else ""
        scheme, sep, rest = source.partition("://") if isinstance(source, str) else ("", "", "")
        bucket, _, sub = rest.partition("/")
        sub = sub.strip("/")
        if (mode not in MOUNTED_MODES or not sep or scheme.lower() not in _ROOT_ONLY_SCHEMES
                or not sub or not bucket or "$" in bucket):
            out[dst] = m
            continue
        root = f"{BUCKET_ROOTS}/{scheme.lower()}-{bucket}" + ("-cached" if mode == "MOUNT_CACHED" else "")
        out[root] = {**m, "source": f"{scheme}://{bucket}", "mode": mode}
        links.append((dst, f"{root}/{sub}"))
    return out, links


def link_script(links: list[tuple[str, str]]) -> str:
    """Bash that makes each ``path -> folder`` link (an empty folder in the way is removed; a
    non-empty one is an error naming it)."""
    if not links:
        return ""

    def q(path: str) -> str:
        return '"$HOME"' + shlex.quote(path[1:]) if path.startswith("~/") else shlex.quote(path)

    lines = ['_launch_link() {',
             '  mkdir -p "$1" 2>/dev/null || true',
             '  if [ -e "$2" ] && [ ! -L "$2" ] && ! rmdir "$2" 2>/dev/null; then',
             '    echo "launch: $2 exists and is not empty: cannot point it at $1" >&2; return 1; fi',
             '  local parent; parent=$(dirname "$2")',
             '  if mkdir -p "$parent" 2>/dev/null && [ -w "$parent" ]; then ln -sfn "$1" "$2"',
             '  else sudo -n mkdir -p "$parent" && sudo -n ln -sfn "$1" "$2"; fi',
             '}']
    lines += [f"_launch_link {q(target)} {q(dst)} || exit 1" for dst, target in links]
    return "\n".join(lines)


def _through_links(path: str, links: list[tuple[str, str]]) -> str:
    """``path`` with a linked prefix replaced by the folder it links to."""
    for dst, target in links:
        d = dst.rstrip("/")
        if path == d or path.startswith(d + "/"):
            return target + path[len(d):]
    return path


# --- the run ----------------------------------------------------------------------------------


def contract_envs(spec: RunSpec, job_dir: str) -> dict[str, str]:
    envs = {
        contract.ENV_JOB_ID: spec.job_id,
        contract.ENV_ATTEMPT: str(spec.attempt),
        contract.ENV_CHECKPOINT_DIR: job_dir.rstrip("/") + "/" + contract.CKPT_PREFIX.rstrip("/"),
        contract.ENV_OUTPUT_DIR: job_dir,
        "PYTHONUNBUFFERED": "1",
    }
    if spec.store_uri:
        envs[contract.ENV_CHECKPOINT_URI] = spec.store_uri.rstrip("/") + "/" + contract.CKPT_PREFIX.rstrip("/")
    if spec.deadline:
        envs[contract.ENV_DEADLINE] = str(spec.deadline)
    return envs


# The trainer writes its results next to metrics.jsonl (LAUNCH_OUTPUT_DIR is the job's prefix);
# afterwards they move into outputs/, where the agent puts them on our other backends.
_KEEP = {contract.METRICS_NAME, contract.DONE_NAME, contract.CKPT_PREFIX.rstrip("/"),
         contract.LOGS_PREFIX.rstrip("/"), contract.OUTPUTS_PREFIX.rstrip("/")}
_MOVE_OUTPUTS = (
    'for f in "$LAUNCH_OUTPUT_DIR"/*; do case "${f##*/}" in ' + "|".join(sorted(_KEEP)) + ') ;; '
    f'*) mkdir -p "$LAUNCH_OUTPUT_DIR/{contract.OUTPUTS_PREFIX}" && '
    f'cp -r "$f" "$LAUNCH_OUTPUT_DIR/{contract.OUTPUTS_PREFIX}" && rm -rf "$f";; esac; done')


def wrap_run(run: str, prologue: str = "") -> str:
    """The task's ``run``, with its output also written to the store's ``logs/attempt-N.log``
    (by node 0), its exit code next to it, ``DONE`` once it exited 0, and the trainer's results
    moved into ``outputs/``, as the agent does; ``prologue`` (the mount links) runs first."""
    logs = f'"$LAUNCH_OUTPUT_DIR/{contract.LOGS_PREFIX}attempt-$LAUNCH_ATTEMPT'
    return "\n".join(([prologue] if prologue else []) + [
        f'mkdir -p "${contract.ENV_CHECKPOINT_DIR}" "$LAUNCH_OUTPUT_DIR/{contract.LOGS_PREFIX}"',
        'if [ "${SKYPILOT_NODE_RANK:-0}" = 0 ]; then',
        f'  bash -c {shlex.quote(run)} 2>&1 | tee -a {logs}.log"',
        "  rc=${PIPESTATUS[0]}",
        f'  echo "$rc" > {logs}{EXIT_CODE_SUFFIX}"',
        f'  if [ "$rc" = 0 ]; then date +%s > "$LAUNCH_OUTPUT_DIR/{contract.DONE_NAME}"; fi',
        f"  {_MOVE_OUTPUTS}",
        "else",
        f"  bash -c {shlex.quote(run)}",
        "  rc=$?",
        "fi",
        "exit $rc",
    ])


def for_attempt(task: Task | None, spec: RunSpec, *, option: dict[str, Any], infra: str,
                num_nodes: int, workdir: str | None, name: str) -> SkyLaunch:
    """Everything SkyPilot needs for one attempt, as a task YAML dict."""
    block = resources_block(task, option, infra)
    managed = is_managed(block)
    if managed:
        block = with_preemption_recovery(block)
    declared = _local_paths_resolved(task) if task is not None else {}
    mounts, job_dir = store_mount(declared, spec.store_uri)
    mounts, links = bucket_root_mounts(mounts)
    job_dir = _through_links(job_dir, links)
    if not spec.store_uri:
        job_dir = ".launch"  # no store: next to the code, for this machine only
    envs = {**spec.envs, **contract_envs(spec, job_dir)}
    prologue = link_script(links)
    config: dict[str, Any] = {"name": name, "num_nodes": num_nodes, "resources": block,
                              "envs": envs, "run": wrap_run(spec.run, prologue)}
    if spec.secrets:
        config["secrets"] = dict(spec.secrets)
    if mounts:
        config["file_mounts"] = mounts
    if workdir:
        config["workdir"] = workdir
    if spec.setup or prologue:
        config["setup"] = "\n".join(part for part in (prologue, spec.setup) if part)
    return SkyLaunch(config=config, managed=managed, checkpoint_dir=envs[contract.ENV_CHECKPOINT_DIR],
                output_dir=envs[contract.ENV_OUTPUT_DIR])


def _local_paths_resolved(task: Task) -> dict[str, Any]:
    """The task's file mounts, with relative local sources made absolute against the YAML's folder
    (as ``workdir`` is); bucket URIs are left as they are."""
    base = os.path.dirname(os.path.abspath(task.path)) if task.path else os.getcwd()

    def fix(src: Any) -> Any:
        if not isinstance(src, str) or "://" in src:
            return src
        return os.path.normpath(os.path.join(base, os.path.expanduser(src)))

    mounts = task.model_dump(exclude_none=True)["file_mounts"]
    for dst, m in mounts.items():
        if isinstance(m, dict):
            m["source"] = [fix(x) for x in m["source"]] if isinstance(m.get("source"), list) else fix(m.get("source"))
        else:
            mounts[dst] = fix(m)
    return mounts


def to_sky_task(config: dict[str, Any]):
    """Build the ``sky.Task`` through SkyPilot's own loader (its schema validates the dict)."""
    import sky

    return sky.Task.from_yaml_config(copy.deepcopy(config))


def sky_name(*parts: str, limit: int = 40) -> str:
    """A valid SkyPilot cluster/job name: lowercase letters, digits and '-', starting with a
    letter, at most ``limit`` characters (long run ids keep their unique tail)."""
    raw = "-".join(p for p in parts if p).lower()
    clean = "".join(c if c.isalnum() else "-" for c in raw).strip("-")
    while "--" in clean:
        clean = clean.replace("--", "-")
    if not clean or not clean[0].isalpha():
        clean = "launch-" + clean
    if len(clean) > limit:
        clean = clean[:10].rstrip("-") + "-" + clean[-(limit - 11):].lstrip("-")
    return clean.rstrip("-")
