"""Backends, one sub-package per provider, looked up by the job's ``infra`` string.

``local`` (the embedded default), ``ssh/<pool>``, ``vast`` and ``kaggle`` are ours; any other
infra (``aws``, ``gcp/us-east1``, ``k8s``, ``slurm/mycluster``, ...) goes to SkyPilot. Modules are
imported only when a job needs them, so optional SDKs stay optional.
"""

from __future__ import annotations

import importlib

from launcher.backends.base import Backend, MissingDependencyError

# infra kind -> (module, class, pip extra that provides its SDK)
_REGISTRY = {
    "local": ("launcher.backends.local.backend", "LocalBackend", None),
    "ssh": ("launcher.backends.ssh.backend", "SSHBackend", "ssh"),
    "vast": ("launcher.backends.vast.backend", "VastBackend", "vast"),
    "kaggle": ("launcher.backends.kaggle.backend", "KaggleBackend", "kaggle"),
    "skypilot": ("launcher.backends.skypilot.backend", "SkyPilotBackend", "skypilot"),
}


def infra_kind(infra: str) -> str:
    """``"ssh/lab" -> "ssh"``, ``"local" -> "local"``, ``"aws/us-east-1" -> "skypilot"``."""
    head = (infra or "local").split("/", 1)[0].lower()
    return head if head in _REGISTRY and head != "skypilot" else "skypilot"


def get_backend(infra: str) -> Backend:
    kind = infra_kind(infra)
    module, cls, extra = _REGISTRY[kind]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("launcher"):
            raise MissingDependencyError(f"infra {infra!r}: the {kind} backend is not available in this version") from None
        hint = f" Install it with: pip install 'launch[{extra}]'" if extra else ""
        raise MissingDependencyError(f"infra {infra!r} needs the Python package {e.name!r}.{hint}") from None
    return getattr(mod, cls)(infra)
