"""Preflight on the machine: before the run starts, does it really have the accelerators the
task asks for? Rented boxes sometimes come with a GPU the driver cannot use; without this check
such a job would quietly train on the CPU.

Two looks, both must pass: the driver's (``nvidia-smi``, else NVML through nvidia-ml-py) sees the
requested count of a requested kind, and the run's Python sees them (``torch.cuda.is_available()``
and ``torch.cuda.device_count()``, when torch is installed there).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

TORCH_PROBE = ("import json, torch; print(json.dumps([torch.cuda.is_available(), "
               "torch.cuda.device_count()]))")


def wanted_kinds(acc: Any) -> dict[str, int]:
    """The task's accelerators as ``{kind: count}``; several kinds mean any one of them will do.
    ``"V100"``, ``"V100:2"``, ``{"V100": 2}``, ``{"V100": None}``, ``["V100:1", "A6000:1"]``."""
    if not acc:
        return {}
    if isinstance(acc, str):
        acc = [acc]
    if isinstance(acc, dict):
        return {str(k): int(v or 1) for k, v in acc.items()}
    out = {}
    for a in acc:
        name, _, count = str(a).partition(":")
        out[name] = int(float(count)) if count else 1
    return out


def _key(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def matches(kind: str, gpu_name: str) -> bool:
    """``A100-80GB`` matches ``NVIDIA A100-SXM4-80GB``; ``V100`` matches ``Tesla V100-SXM2-16GB``;
    ``A6000`` matches ``NVIDIA RTX A6000``: every part of the kind appears in the name."""
    name = _key(gpu_name)
    return all(_key(part) in name for part in re.split(r"[-_ ]", kind) if part)


def driver_gpus(env: dict[str, str] | None = None, nvml: Any | None = None) -> tuple[list[str] | None, str]:
    """GPU names as the driver sees them (``nvidia-smi``, else NVML), or None and why not."""
    smi = shutil.which("nvidia-smi", path=(env or {}).get("PATH"))
    if smi and nvml is None:
        try:
            r = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], env=env,
                               capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"nvidia-smi did not answer: {e}"
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            return None, f"nvidia-smi failed (exit {r.returncode}): {last[0]}"
        return [line.strip() for line in r.stdout.splitlines() if line.strip()], ""
    if nvml is None:
        from launcher.watch.sampler import load_nvml

        nvml, why = load_nvml()
        if nvml is None:
            return None, f"no nvidia-smi on PATH and {why}"
    names = []
    for i in range(nvml.nvmlDeviceGetCount()):
        n = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i))
        names.append(n.decode() if isinstance(n, bytes) else str(n))
    return names, ""


def torch_view(env: dict[str, str] | None = None, python: str = "python") -> tuple[bool, int] | None:
    """What the run's Python sees: (cuda available, device count), None when it has no torch."""
    try:
        r = subprocess.run([python, "-c", TORCH_PROBE], env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    try:
        ok, count = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return bool(ok), int(count)


def check(acc: Any, env: dict[str, str] | None = None, nvml: Any | None = None,
          python: str = "python") -> str:
    """"" when the machine has what ``acc`` asks for, else one line saying what is missing."""
    wanted = wanted_kinds(acc)
    if not wanted:
        return ""
    ask = " or ".join(f"{n}x {k}" for k, n in wanted.items())
    names, why = driver_gpus(env, nvml)
    if names is None:
        return f"the task asks for {ask}, but the driver sees no GPU: {why}"
    found = ", ".join(names) or "none"
    fitting = {k: sum(matches(k, n) for n in names) for k in wanted}
    if not any(fitting[k] >= n for k, n in wanted.items()):
        return f"the task asks for {ask}; the driver sees {len(names)} GPU(s): {found}"
    view = torch_view(env, python)
    if view is not None:
        ok, count = view
        need = min(n for k, n in wanted.items() if fitting[k] >= n)
        if not ok or count < need:
            return (f"the driver sees {found}, but torch in the run's Python does not "
                    f"(cuda available: {ok}, devices: {count}); it would train on the CPU")
    return ""
