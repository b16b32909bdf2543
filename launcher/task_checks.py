"""Checks of a whole task, after each field has passed its own rule (``task_rules``).

``check_task`` is what SkyPilot refuses when it builds a task from a YAML file or validates it at
launch, where more than one field is involved: null envs, the Docker login variables, file mount
paths and storage specs (after filling ``$ENV`` in them, as SkyPilot does). ``check_placement``
depends on where the task runs, so ``launch up`` calls it once the infra is resolved (the
command line may override the YAML's): a TPU needs GCP or Kubernetes, a VM image needs a cloud.
Both raise a one-line TaskError naming the file, the line and the key.
"""

from __future__ import annotations

import os
from typing import Any

from launcher import task_rules as rules
from launcher.errors import TaskError
from launcher.task import StorageMount, Task, refusal


def _refuse(task: Task, loc: tuple, msg: str) -> TaskError:
    return refusal(task._where, task._marks, loc, msg)


def check_task(task: Task, env_overrides: dict[str, str]) -> None:
    """Refuse what SkyPilot refuses across fields; fill null envs from ``env_overrides``."""
    for field, what in (("envs", "environment variable"), ("secrets", "secret")):
        for key, value in getattr(task, field).items():
            try:
                rules.env_var(key, value, what)
            except ValueError as e:
                raise _refuse(task, (field, key), str(e)) from None
    for key, value in task.envs.items():
        if value is None:
            if key not in env_overrides:
                raise _refuse(task, ("envs", key), f"has no value; set one in the YAML ({key}: \"\" "
                              f"for empty) or with --env {key}=VALUE")
            task.envs[key] = env_overrides[key]
    try:
        rules.docker_login(task.envs, task.secrets)
    except ValueError as e:
        raise _refuse(task, ("envs",), str(e)) from None
    _check_mounts(task)


def _check_mounts(task: Task) -> None:
    values = {str(k): str(v) for k, v in {**task.envs, **task.secrets}.items() if v is not None}
    fill = lambda s: rules.fill_env_vars(s, values) if isinstance(s, str) else s  # noqa: E731
    for dst, src in task.file_mounts.items():
        try:
            rules.mount_path(fill(dst), workdir=task.workdir is not None)
            if isinstance(src, StorageMount):
                source = [fill(s) for s in src.source] if isinstance(src.source, list) else fill(src.source)
                rules.storage_spec(fill(src.name), source, src.mode)
            else:
                rules.copy_source(fill(src))
        except ValueError as e:
            raise _refuse(task, ("file_mounts", dst), str(e)) from None


def check_placement(task: Task, infra: str | None = None) -> None:
    """Refuse options that cannot run where they would go: ``infra`` (the command line's or the
    environment's choice) or else each option's own ``infra``."""
    res = task.resources
    alts_key = "ordered" if res.ordered else "any_of"
    alts = getattr(res, alts_key) or [None]
    for i, (alt, opt) in enumerate(zip(alts, res.options())):
        where = infra or opt.get("infra")
        for key, check in (("accelerators", _tpu), ("image_id", _image)):
            set_here = alt is not None and getattr(alt, key) is not None
            loc = ("resources", alts_key, i, key) if set_here else ("resources", key)
            try:
                check(opt.get(key), where)
            except ValueError as e:
                raise _refuse(task, loc, str(e)) from None


def _cloud_region(infra: str | None) -> tuple[str | None, str | None]:
    parts = [p.strip() for p in (infra or "").split("/")]
    cloud = parts[0].lower() or None
    region = parts[1] if len(parts) > 1 and parts[1] != "*" else None
    if cloud in ("*", "skypilot", "sky"):  # SkyPilot picks the cloud
        return None, region
    return ("kubernetes" if cloud == "k8s" else cloud), region


def _accelerator_names(acc: Any) -> list[str]:
    if isinstance(acc, str):
        return [acc.split(":")[0]]
    return [str(a).split(":")[0] for a in acc] if isinstance(acc, (dict, list)) else []


def _tpu(acc: Any, infra: str | None) -> None:
    """Resources: a TPU runs on GCP or on Kubernetes (GKE)."""
    cloud, _ = _cloud_region(infra)
    tpus = [n for n in _accelerator_names(acc) if "tpu" in n.lower()]
    if tpus and cloud in rules.SKY_CLOUDS and cloud not in ("gcp", "kubernetes"):
        raise ValueError(f"{tpus[0]} is a TPU: it runs on gcp or k8s, not on {infra}")


def _image(image_id: Any, infra: str | None) -> None:
    """Resources.validate: a VM image needs a cloud; on AWS, a region too; a mapping of regions
    must hold the infra's region. Kubernetes reads any image as a Docker image."""
    vm = rules.vm_images(image_id) if image_id else {}
    cloud, region = _cloud_region(infra)
    if not vm or cloud == "kubernetes":
        return
    if cloud is None:
        raise ValueError("image_id names a VM image, which needs a cloud in resources.infra "
                         "(e.g. aws/us-east-1); a Docker image is written docker:IMAGE")
    # Stricter: SkyPilot has no say on our own infras; they run on a given machine or in a Docker
    # image, and cannot boot a VM image.
    if cloud in (*rules.OUR_ONLY_INFRAS, "ssh", "vast"):
        raise ValueError(f"on {cloud}, image_id must be a Docker image (docker:IMAGE)")
    if region and None not in vm and region not in vm:
        raise ValueError(f"image_id has no image for the region {region} (it has {', '.join(map(str, vm))})")
    if cloud == "aws" and not region and not str(vm.get(None, "skypilot:")).startswith("skypilot:"):
        raise ValueError("on aws, an image_id needs a region: infra aws/<region>")


def check_local_paths(task: Task) -> None:
    """What SkyPilot checks on the launching machine, relative to where the command runs: the
    workdir is a folder; a file mount's local source exists; a storage mount's local source is
    a folder (or a list of existing paths)."""
    if task.workdir and not os.path.isdir(os.path.expanduser(task.workdir)):
        raise _refuse(task, ("workdir",), f"{task.workdir} is not a folder (a relative workdir is "
                      "relative to the directory you run launch in)")
    for dst, src in task.file_mounts.items():
        storage = isinstance(src, StorageMount)
        sources = (src.source if isinstance(src.source, list) else [src.source]) if storage else [src]
        for s in sources:
            if not isinstance(s, str) or rules.is_url(s) or "://" in s or s.startswith("skypilot:"):
                continue
            path = os.path.abspath(os.path.expanduser(s))
            if not os.path.exists(path):
                raise _refuse(task, ("file_mounts", dst), f"local source {s!r} does not exist")
            if storage and isinstance(src.source, str) and os.path.isfile(path):
                raise _refuse(task, ("file_mounts", dst), f"a storage source must be a folder; to "
                              f"upload one file write source: [{s}]")
