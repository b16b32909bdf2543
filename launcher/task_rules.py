"""The value rules of the task format: as strict as SkyPilot's Resources, Task and Storage.

Each rule takes a raw YAML value, returns it unchanged when it is valid, and otherwise raises
``ValueError`` with a message that says what was expected and what was found (the task loader
adds the file, the line and the key). Nothing here imports SkyPilot, so the CLI starts fast and
works without it: the constants below are SkyPilot 0.14's, and
``tests/launcher/test_task_skypilot_schema.py`` checks them against the installed SkyPilot and
runs both validators over a corpus of good and bad values per field.

SkyPilot checks a task in three places, and these rules cover all three, offline:
- its schema (``sky/utils/schemas.py``): types, enums, the infra pattern, disk_size's pattern;
- ``Resources.__init__``/``from_yaml_config`` and ``Task.from_yaml_config``: cpus, memory,
  disk_size, ports, accelerators, infra parts, image_id shapes, job_recovery, null envs;
- at launch (``Task.validate``, ``Resources.validate``, ``Storage.construct``): the task name,
  mount paths, storage specs, the recovery strategy, an image_id's cloud, a TPU's cloud.

Accelerator names: at launch SkyPilot canonicalises a name against its catalog (case-insensitive,
so ``v100`` becomes ``V100``) and keeps a name that no catalog has, since it may be a Kubernetes
GPU label; it refuses only a name that matches several catalog names in part. Offline, without
the catalog, only the form of a name can be checked, which is what ``_accelerator_name`` does.

Where a rule is stricter than SkyPilot, a ``Stricter:`` comment next to it says why.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import urllib.parse
from typing import Any

# SkyPilot 0.14: sky.skylet.constants.ALL_CLOUDS (the infra schema's cloud names).
SKY_CLOUDS = ("aws", "azure", "gcp", "ibm", "lambda", "scp", "oci", "kubernetes", "runpod", "vast",
              "vsphere", "cudo", "fluidstack", "paperspace", "primeintellect", "do", "nebius", "ssh",
              "slurm", "hyperbolic", "seeweb", "shadeform", "yotta", "mithril", "verda")
# Ours alone (ssh and vast are SkyPilot clouds too); "skypilot"/"sky" leave the cloud to SkyPilot.
OUR_ONLY_INFRAS = ("local", "kaggle", "skypilot", "sky")
# sky.utils.registry.JOBS_RECOVERY_STRATEGY_REGISTRY, upper-cased as Resources does.
RECOVERY_STRATEGIES = ("EAGER_NEXT_REGION", "FAILOVER")
# sky.data.storage.StoreType and StorageMode values (matched case-insensitively, as its schema).
STORE_TYPES = ("S3", "GCS", "AZURE", "R2", "IBM", "OCI", "NEBIUS", "COREWEAVE", "VASTDATA", "HF",
               "VOLUME")
STORAGE_MODES = ("MOUNT", "COPY", "MOUNT_CACHED")
# Storage._validate_source: the URL schemes a storage source may have.
SOURCE_SCHEMES = ("s3", "gs", "https", "r2", "cos", "oci", "nebius", "cw", "vastdata", "hf")
# sky.skylet.constants.MEMORY_SIZE_UNITS
MEMORY_UNITS = {"kb": 2**10, "ki": 2**10, "mb": 2**20, "mi": 2**20, "gb": 2**30, "gi": 2**30,
                "tb": 2**40, "ti": 2**40, "pb": 2**50, "pi": 2**50}
DOCKER_LOGIN_ENVS = ("SKYPILOT_DOCKER_USERNAME", "SKYPILOT_DOCKER_PASSWORD", "SKYPILOT_DOCKER_SERVER")
REMOTE_WORKDIR = "~/sky_workdir"  # sky.skylet.constants.SKY_REMOTE_WORKDIR

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TASK_NAME = re.compile(r"[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*")  # sky.task._VALID_NAME_REGEX
_DECIMAL = r"[0-9]+(?:\.[0-9]+)?"
_UNITS = "|".join(MEMORY_UNITS)
# disk_size's schema pattern: units in lower case, upper case or capitalised ("GB", "gb", "Gb").
_DISK_UNITS = "|".join([*MEMORY_UNITS, *(u.upper() for u in MEMORY_UNITS),
                        *(u.capitalize() for u in MEMORY_UNITS)])
_MEMORY_GPU = re.compile(r"[0-9]+[GgMmTt][Bb]\+?")  # Resources._parse_accelerators_from_str
# Stricter: SkyPilot keeps any accelerator name until its catalog lookup at launch, which fails on
# an empty name or one with regular-expression characters; a GPU model is letters, digits, and
# '-', '_', '.' or inner spaces.
_ACCELERATOR_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._ -]*[A-Za-z0-9])?")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(n: float, v: Any) -> None:
    # Stricter: SkyPilot takes .inf and .nan (float('nan') <= 0 is false); no machine has either.
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"must be a positive number, got {v!r}")


def cpus(v: Any) -> Any:
    """``4``, ``0.5``, ``"4"``, ``"4+"`` (at least 4)."""
    # Stricter: SkyPilot reads the number with float(), which also takes ' 4', '1e1' and '4_0';
    # we take plain decimals, the form the Vast offer query and `launch plan` read.
    if _is_number(v):
        n = float(v)
    elif isinstance(v, str) and (m := re.fullmatch(rf"({_DECIMAL})\+?", v)):
        n = float(m[1])
    else:
        raise ValueError(f"expected a number of CPUs or '<number>+' (e.g. 4 or '4+'), got {v!r}")
    _positive(n, v)
    return v


def memory(v: Any) -> Any:
    """``16``, ``"16GB"``, ``"16+"``, ``"1.5TB+"``: GB unless a unit (KB..PB, KI..PI) is given."""
    # Stricter: as for cpus; and SkyPilot's 'x' suffix (memory per vCPU, internal to its jobs
    # controller) is not for task files; and 0 (which SkyPilot allows on Slurm alone, to leave
    # out --mem) is refused everywhere.
    if _is_number(v):
        gb = float(v)
    elif isinstance(v, str) and (m := re.fullmatch(rf"({_DECIMAL})({_UNITS})?\+?", v, re.IGNORECASE)):
        gb = float(m[1]) * MEMORY_UNITS[(m[2] or "gb").lower()] / 2**30
    else:
        raise ValueError(f"expected GB or '<number><unit>' with an optional '+' (e.g. 16, '16GB', "
                         f"'32GB+'), got {v!r}")
    _positive(gb, v)
    return v


def disk_size(v: Any) -> Any:
    """``256`` (GB) or ``"256GB"``, ``"1TB"``, ``"1024MB"``: a whole, positive number of GB."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v <= 0:
            raise ValueError(f"must be a positive number of GB, got {v!r}")
        return v
    m = re.fullmatch(rf"([0-9]+)({_DISK_UNITS})?", v) if isinstance(v, str) else None
    if not m:
        raise ValueError(f"expected a whole number of GB or '<number><unit>' (e.g. 256, '256GB', "
                         f"'1TB'), got {v!r}")
    size = int(m[1]) * MEMORY_UNITS[(m[2] or "gb").lower()]
    if size % 2**30 or size <= 0:
        raise ValueError(f"must be a positive, whole number of GB, got {v!r}")
    return v


def ports(v: Any) -> Any:
    """``8080``, ``"8080"``, ``"8000-8010"``, ``"80,443"`` or a list of those."""
    items = v if isinstance(v, list) else [v]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ValueError(f"expected a port, a range such as '8000-8010', or a list of them, got {v!r}")
        for token in (t.strip() for t in str(item).split(",")):
            if token and not _port_range(token):
                raise ValueError(f"{token!r} is not a port (1-65535) or a range LOW-HIGH")
    return v


def _port_range(token: str) -> bool:
    ends = token.split("-")
    if len(ends) > 2 or not all(re.fullmatch(r"[0-9]+", e) and 1 <= int(e) <= 65535 for e in ends):
        return False
    return int(ends[0]) <= int(ends[-1])


def accelerators(v: Any, *, in_option: bool = False) -> Any:
    """``"V100"``, ``"V100:2"``, ``{V100: 2}``, ``{V100: null}``, ``["V100:1", "A6000:1"]``.
    An ``any_of``/``ordered`` option takes one: a string or a one-key mapping with a count."""
    if isinstance(v, str):
        _accelerator(v)
    elif isinstance(v, dict):
        if not v or (in_option and len(v) > 1):
            raise ValueError(f"expected {'one accelerator' if in_option else 'accelerators'} "
                             f"as {{NAME: COUNT}}, got {v!r}")
        for name, count in v.items():
            _accelerator_name(name)
            if count is not None or in_option:
                _count(count, f"{name}: {count!r}")
    elif isinstance(v, list) and not in_option and v and all(isinstance(a, str) for a in v):
        for a in v:
            _accelerator(a)
    else:
        form = "'NAME[:COUNT]' or {NAME: COUNT}" if in_option else \
            "'NAME[:COUNT]', {NAME: COUNT, ...} or a list of 'NAME[:COUNT]'"
        raise ValueError(f"expected {form}, got {v!r}")
    return v


def _accelerator(text: str) -> None:
    parts = text.split(":")
    # Stricter: SkyPilot also takes a GPU memory size ('24GB+', 'nvidia:24GB:2') and looks the
    # matching GPUs up in its catalog; our own backends choose machines by GPU name.
    if _MEMORY_GPU.fullmatch(parts[0]) or (len(parts) > 1 and _MEMORY_GPU.fullmatch(parts[1])):
        raise ValueError(f"{text!r}: name the GPU (e.g. 'A6000:1'); a choice by memory size needs "
                         "SkyPilot's catalog")
    if len(parts) > 2:
        raise ValueError(f"expected 'NAME' or 'NAME:COUNT' (e.g. 'V100:1'), got {text!r}")
    _accelerator_name(parts[0])
    if len(parts) == 2:
        if not re.fullmatch(_DECIMAL, parts[1]):
            raise ValueError(f"expected 'NAME' or 'NAME:COUNT' with a number (e.g. 'V100:1'), got {text!r}")
        _count(float(parts[1]), text)


def _accelerator_name(name: Any) -> None:
    if not isinstance(name, str) or not _ACCELERATOR_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an accelerator name (e.g. V100, A6000, H100)")


def _count(count: Any, what: str) -> None:
    if not _is_number(count) or not math.isfinite(count) or count <= 0:
        raise ValueError(f"accelerator count must be a positive number, got {what}")


def infra(v: Any) -> Any:
    """``local``, ``ssh/<pool>``, ``vast``, ``kaggle``, or SkyPilot's ``cloud[/region[/zone]]``
    (``*`` for any), ``k8s[/context]``; no part may be empty."""
    if not isinstance(v, str):
        raise ValueError(f"expected a string such as 'aws/us-east-1', got {v!r}")
    head = v.split("/", 1)[0].lower()
    if head in ("k8s", "kubernetes"):  # the context after "k8s/" may hold slashes
        if v.endswith("/") and v.count("/") == 1:
            raise ValueError(f"{v!r}: name the context after '{head}/', or write '{head}' alone")
        parts = v.strip().strip("/").split("/")
    else:
        parts = v.split("/")
    if any(not p.strip() for p in parts):
        raise ValueError(f"{v!r} has an empty part; expected 'cloud', 'cloud/region' or 'cloud/region/zone'")
    if head in OUR_ONLY_INFRAS and len(parts) > 1:
        raise ValueError(f"{v!r}: '{head}' takes no region or zone")
    # Stricter: SkyPilot reads ssh/a/b as the pool 'a/b'; a pool name holds no '/'.
    if head not in ("k8s", "kubernetes") and len(parts) > (2 if head == "ssh" else 3):
        raise ValueError(f"{v!r} has too many parts; expected 'cloud', 'cloud/region' or 'cloud/region/zone'")
    known = (*OUR_ONLY_INFRAS, *SKY_CLOUDS, "k8s", "*")
    if head not in known:
        hint = difflib.get_close_matches(head, known, n=1, cutoff=0.6)
        raise ValueError(f"unknown infra {parts[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                         f"; expected local, ssh/<pool>, vast, kaggle or a SkyPilot cloud"))
    return v


def recovery_strategy(v: Any) -> Any:
    """``FAILOVER`` or ``EAGER_NEXT_REGION`` (any case), ``none`` or null."""
    if v is None or v == "none":  # Resources: exactly 'none' turns recovery off
        return v
    if not isinstance(v, str) or v.upper() not in RECOVERY_STRATEGIES:
        raise ValueError(f"unknown job recovery strategy {v!r}; expected one of "
                         f"{', '.join(RECOVERY_STRATEGIES)} (or 'none')")
    return v


def exit_codes(v: Any) -> Any:
    """One exit code (0-255) or a list of distinct ones."""
    codes = v if isinstance(v, list) else [v]
    ok = all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in codes)
    if not ok or len(set(codes)) != len(codes):
        raise ValueError(f"expected an exit code 0-255 or a list of distinct ones, got {v!r}")
    return v


def image_id(v: Any) -> Any:
    """``docker:IMAGE``, an image id, or a mapping of region (or null) to image id, where the key
    ``docker`` names a Docker image beside the VM images."""
    if v is None:
        return v
    images = v if isinstance(v, dict) else {None: v}
    for region, image in images.items():
        # Stricter: SkyPilot takes '' and fails when it looks the image up at launch.
        if not (region is None or isinstance(region, str)) or not isinstance(image, str) or not image.strip():
            raise ValueError(f"expected an image id, 'docker:IMAGE' or {{region: image id}}, got {v!r}")
    if "docker" in images and any(str(i).startswith("docker:") for r, i in images.items() if r != "docker"):
        raise ValueError("image_id has both a 'docker' key and docker:-prefixed values; use one of them")
    return v


def vm_images(v: Any) -> dict:
    """The VM images of an image_id (Docker images left out), keyed by region (None for any)."""
    images = v if isinstance(v, dict) else {None: v}
    return {r: i for r, i in images.items() if r != "docker" and not str(i).startswith("docker:")}


def task_name(v: Any) -> Any:
    if v is not None and (not isinstance(v, str) or not TASK_NAME.fullmatch(v)):
        raise ValueError(f"invalid task name {v!r}: letters and digits, joined by at most two of "
                         "'.', '_' or '-' (e.g. 'imagenet-r50')")
    return v


def env_var(k: Any, value: Any, what: str) -> None:
    """A name that is an environment variable name; a value that is a scalar or null."""
    # Stricter: SkyPilot str()s keys and values. YAML reads `on:` as True and `1:` as 1, so the
    # variable's name would not be what was written; a list or mapping value is an indentation
    # slip that SkyPilot would export as its Python repr; a date is re-written by YAML.
    if not isinstance(k, str) or not ENV_NAME.fullmatch(k):
        raise ValueError(f"invalid {what} name {k!r}: letters, digits and '_', not starting with a digit")
    if value is not None and not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string or a number, got {value!r} (quote it)")


def docker_login(envs: dict, secrets: dict) -> None:
    """SkyPilot's Docker login variables come all three together, in envs or in secrets."""
    in_envs = sorted(set(DOCKER_LOGIN_ENVS) & set(envs))
    in_secrets = sorted(set(DOCKER_LOGIN_ENVS) & set(secrets))
    if in_envs and in_secrets:
        raise ValueError(f"Docker login variables go together in envs or in secrets, not both "
                         f"(envs: {', '.join(in_envs)}; secrets: {', '.join(in_secrets)})")
    for where, found in (("envs", in_envs), ("secrets", in_secrets)):
        if found and len(found) != len(DOCKER_LOGIN_ENVS):
            missing = sorted(set(DOCKER_LOGIN_ENVS) - set(found))
            raise ValueError(f"Docker login variables go together: {where} lacks {', '.join(missing)}")


def fill_env_vars(text: str, values: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by the task's values, as SkyPilot fills file_mounts."""
    return re.sub(r"\$\{?\b([a-zA-Z_][a-zA-Z0-9_]*)\b\}?", lambda m: values.get(m[1], m[0]), text)


def is_url(path: str) -> bool:
    return bool(urllib.parse.urlsplit(path).netloc)  # sky.data.data_utils.is_cloud_store_url


def mount_path(dst: Any, *, workdir: bool) -> None:
    """A file mount's destination: not a URL, no trailing '/', not SkyPilot's workdir."""
    if not isinstance(dst, str) or not dst:
        raise ValueError(f"a file mount destination must be a path, got {dst!r}")
    if dst.endswith("/"):
        raise ValueError(f"mount paths cannot end with '/': {dst!r}")
    if is_url(dst):
        raise ValueError(f"a file mount destination cannot be a bucket URL: {dst!r}")
    if workdir and dst == REMOTE_WORKDIR:
        raise ValueError(f"{REMOTE_WORKDIR} is where the workdir goes; mount elsewhere")


def copy_source(src: str) -> None:
    if src.endswith("/"):
        raise ValueError(f"mount paths cannot end with '/': {src!r}")


def storage_store(v: Any) -> Any:
    # Stricter: a VOLUME store is a SkyPilot cluster volume, which our own backends cannot make.
    if v is not None and (not isinstance(v, str) or v.upper() not in STORE_TYPES[:-1]):
        raise ValueError(f"unknown store {v!r}; expected one of {', '.join(STORE_TYPES[:-1])}")
    return v


def storage_mode(v: Any) -> Any:
    if v is not None and (not isinstance(v, str) or v.upper() not in STORAGE_MODES):
        raise ValueError(f"unknown mode {v!r}; expected one of {', '.join(STORAGE_MODES)}")
    return v


def storage_spec(name: str | None, source: Any, mode: str | None) -> None:
    """What ``Storage.construct`` checks before it touches a bucket: a source or a name; a
    source that is a local path or a supported URL; a name for a local source and none for a URL.
    Whether a local source exists is checked at launch, where the command runs (as SkyPilot).

    Not checked, on purpose: SkyPilot 0.14 refuses a bucket sub-path (``s3://bucket/prefix``) in
    MOUNT and MOUNT_CACHED modes; the design declares the checkpoint store that way, and our own
    backends realise the mount by syncing that prefix."""
    if source is None:
        # Stricter: SkyPilot accepts COPY with no source when a storage of that name is already in
        # its own state; we cannot see that state.
        if (mode or "").upper() == "COPY":
            raise ValueError("a COPY mount needs a source")
        if not name:
            raise ValueError("a storage mount needs a source or a name")
    local = True
    if isinstance(source, list):
        if not source or not all(isinstance(s, str) for s in source):
            raise ValueError(f"source: expected a path, a bucket URL or a list of paths, got {source!r}")
        if urls := [s for s in source if urllib.parse.urlsplit(s).scheme]:
            raise ValueError(f"source: a list holds local paths only, got {urls[0]!r}")
        bases = [os.path.basename(s) for s in source]
        if dup := sorted({b for b in bases if bases.count(b) > 1}):
            raise ValueError(f"source: two paths have the same name: {', '.join(dup)}")
        for s in source:
            copy_source(s)
    elif isinstance(source, str):
        scheme = urllib.parse.urlsplit(source).scheme
        local = scheme == ""
        if local:
            copy_source(source)
        elif scheme not in SOURCE_SCHEMES:
            raise ValueError(f"source {source!r}: expected a local path or a URL "
                             f"({', '.join(s + '://' for s in SOURCE_SCHEMES)})")
    if name is not None and source is not None and not local:
        raise ValueError("name: leave it out when the source is a bucket URL (it names the bucket)")
    if name is None and source is not None and local:
        raise ValueError("a storage mount of a local source needs a name (the bucket to upload to)")
    if name is not None and name.split("://")[0].lower() in SOURCE_SCHEMES:
        raise ValueError(f"name {name!r} is a URL; give an existing bucket as 'source'")
