"""Settings of the Kaggle backend, and where its credentials come from (kept apart).

``KaggleSettings`` holds what may be stored with a job (limits, flags, intervals); every field has
an environment variable, and the environment wins over the default. ``KaggleCredentials`` only
says *whether* and *where* the SDK will find the API key; the key itself is never read into our
objects, stored or logged: the ``kaggle`` SDK reads it from its usual places.

========================================  ==============================  ==============
variable                                  meaning                         default
========================================  ==============================  ==============
``LAUNCH_KAGGLE_SESSION_LIMIT``           seconds a session may run       43200 (12 h)
``LAUNCH_KAGGLE_MARGIN``                  stop this long before the end   900 (15 min)
``LAUNCH_KAGGLE_GPU``                     ``0`` runs on CPU               1
``LAUNCH_KAGGLE_INTERNET``                ``0`` turns internet off        1
``LAUNCH_KAGGLE_ACCELERATOR``             a Kaggle machine shape          from resources
``LAUNCH_KAGGLE_POLL_INTERVAL``           seconds between status calls    30
``LAUNCH_KAGGLE_CONTROL_INTERVAL``        the kernel checks the store     10
``LAUNCH_KAGGLE_START_GRACE``             trust a finished status after   60
``LAUNCH_KAGGLE_LOG_INTERVAL``            ``launch logs -f`` refresh      5
``LAUNCH_KAGGLE_ENDPOINT``                another API server (tests)      api.kaggle.com
``LAUNCH_KAGGLE_WEEKLY_GPU_HOURS``        GPU quota per 7 days (0: none)  30
``LAUNCH_KAGGLE_WEEKLY_TPU_HOURS``        TPU quota per 7 days            20
``LAUNCH_KAGGLE_MIN_SESSION``             shortest session worth pushing  1800 (30 min)
``LAUNCH_KAGGLE_SHAPES``                  shapes this account may use     NvidiaTeslaT4,TpuV5E8
``LAUNCH_KAGGLE_CREDENTIALS``             ``secrets`` or ``temporary``    secrets
``LAUNCH_KAGGLE_ROLE_ARN``                role for temporary credentials  (none)
``LAUNCH_KAGGLE_SECRETS_RECHECK``         look for attached secrets every 300
``LAUNCH_KAGGLE_END_GRACE``               believe the store's exit after  120
``LAUNCH_KAGGLE_STOP_WAIT``               ``down`` waits, then deletes    45
========================================  ==============================  ==============

The weekly quota figures are only the fallback: Kaggle's own quota view is asked first. Machine
shapes: an ordinary account gets a T4 (x2) GPU or a TPU v5e-8; A100, H100 and L4 are restricted
(add them to ``LAUNCH_KAGGLE_SHAPES`` if the account has them); the P100 and the TPU v3-8 are
retired, and a push that asks for one silently runs on a T4 or a TPU v5e-8, so launch refuses
them. A session asks Kaggle for a timeout
below the service's maximum (12 h, TPU 9 h).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from launcher.backends.base import NoCapacityError
from launcher.errors import InfraError
from launcher.settings import env_bool, env_float

# SkyPilot accelerator names -> Kaggle machine shapes (``kaggle kernels push --accelerator``).
# T4 and L4 sessions come with several cards (T4 x2, L4 x4); Kaggle offers no other choice.
MACHINE_SHAPES = {
    "T4": "NvidiaTeslaT4",
    "L4": "NvidiaL4",
    "A100": "NvidiaTeslaA100",
    "H100": "NvidiaH100",
    "TPU-V5E-8": "TpuV5E8",
    "TPU-V5LITEPOD-8": "TpuV5E8",
}
TPU_SHAPES = frozenset({"TpuV5E8"})
# A push asking for a retired accelerator runs on another one without an error (the SDK only warns).
RETIRED = {"P100": "NvidiaTeslaT4", "TPU-V3-8": "TpuV5E8"}
RETIRED_SHAPES = {"nvidiateslap100": "NvidiaTeslaT4", "tpuv38": "TpuV5E8", "tpu1vmv38": "TpuV5E8",
                  "tpuv232": "a CPU", "tpuv2256": "a CPU"}
ORDINARY_SHAPES = ("NvidiaTeslaT4", "TpuV5E8")
# The longest session Kaggle runs, and what we ask for at most (a timeout below it).
SERVICE_MAX = {"gpu": 12 * 3600.0, "cpu": 12 * 3600.0, "tpu": 9 * 3600.0}
TIMEOUT_HEADROOM = 60.0


@dataclass(frozen=True)
class KaggleSettings:
    session_limit: float = 12 * 3600.0
    margin: float = 900.0
    enable_gpu: bool = True
    enable_internet: bool = True
    accelerator: str | None = None
    poll_interval: float = 30.0
    control_interval: float = 10.0
    start_grace: float = 60.0
    log_interval: float = 5.0
    endpoint: str | None = None
    weekly_gpu_hours: float = 30.0
    weekly_tpu_hours: float = 20.0
    min_session: float = 1800.0
    shapes: tuple[str, ...] = ORDINARY_SHAPES
    credentials: str = "secrets"  # or "temporary": STS credentials scoped to the job's prefix
    role_arn: str | None = None
    secrets_recheck: float = 300.0
    end_grace: float = 120.0
    stop_wait: float = 45.0

    @classmethod
    def from_env(cls) -> KaggleSettings:
        d = cls()
        return cls(
            session_limit=env_float("LAUNCH_KAGGLE_SESSION_LIMIT", d.session_limit),
            margin=env_float("LAUNCH_KAGGLE_MARGIN", d.margin),
            enable_gpu=env_bool("LAUNCH_KAGGLE_GPU", d.enable_gpu),
            enable_internet=env_bool("LAUNCH_KAGGLE_INTERNET", d.enable_internet),
            accelerator=_accelerator(os.environ.get("LAUNCH_KAGGLE_ACCELERATOR") or None),
            poll_interval=env_float("LAUNCH_KAGGLE_POLL_INTERVAL", d.poll_interval),
            control_interval=env_float("LAUNCH_KAGGLE_CONTROL_INTERVAL", d.control_interval),
            start_grace=env_float("LAUNCH_KAGGLE_START_GRACE", d.start_grace),
            log_interval=env_float("LAUNCH_KAGGLE_LOG_INTERVAL", d.log_interval),
            endpoint=(os.environ.get("LAUNCH_KAGGLE_ENDPOINT") or "").rstrip("/") or None,
            weekly_gpu_hours=env_float("LAUNCH_KAGGLE_WEEKLY_GPU_HOURS", d.weekly_gpu_hours),
            weekly_tpu_hours=env_float("LAUNCH_KAGGLE_WEEKLY_TPU_HOURS", d.weekly_tpu_hours),
            min_session=env_float("LAUNCH_KAGGLE_MIN_SESSION", d.min_session),
            shapes=tuple(x.strip() for x in os.environ.get("LAUNCH_KAGGLE_SHAPES", "").split(",") if x.strip())
            or d.shapes,
            credentials=_credentials_mode(os.environ.get("LAUNCH_KAGGLE_CREDENTIALS") or d.credentials,
                                          os.environ.get("LAUNCH_KAGGLE_ROLE_ARN")),
            role_arn=os.environ.get("LAUNCH_KAGGLE_ROLE_ARN") or None,
            secrets_recheck=env_float("LAUNCH_KAGGLE_SECRETS_RECHECK", d.secrets_recheck),
            end_grace=env_float("LAUNCH_KAGGLE_END_GRACE", d.end_grace),
            stop_wait=env_float("LAUNCH_KAGGLE_STOP_WAIT", d.stop_wait),
        )

    @property
    def usable(self) -> float:
        """Seconds of training a session gives: the limit less the stop margin."""
        return max(0.0, self.session_limit - self.margin)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _credentials_mode(value: str, role_arn: str | None) -> str:
    if value not in ("secrets", "temporary"):
        raise InfraError(f"LAUNCH_KAGGLE_CREDENTIALS={value!r}: expected 'secrets' or 'temporary'")
    if value == "temporary" and not role_arn:
        raise InfraError("LAUNCH_KAGGLE_CREDENTIALS=temporary needs LAUNCH_KAGGLE_ROLE_ARN: the role whose "
                         "credentials, limited to the job's prefix, the kernel carries")
    return value


def _accelerator(shape: str | None) -> str | None:
    instead = RETIRED_SHAPES.get((shape or "").lower())
    if instead:
        raise InfraError(f"LAUNCH_KAGGLE_ACCELERATOR={shape}: retired; Kaggle would run the session on {instead} "
                         f"instead (an ordinary account has {', '.join(ORDINARY_SHAPES)})")
    return shape


def accelerator_kind(shape: str | None, gpu: bool) -> str:
    """``tpu``, ``gpu`` or ``cpu``: which session limit and which weekly quota a session uses."""
    if shape in TPU_SHAPES:
        return "tpu"
    return "gpu" if gpu or shape else "cpu"


def machine_shape(resources: dict[str, Any], settings: KaggleSettings) -> str | None:
    """The Kaggle machine shape for a resources option: ``LAUNCH_KAGGLE_ACCELERATOR`` wins, then
    the task's ``accelerators`` (of a list, the first this account may use); None is Kaggle's
    default GPU. Raises NoCapacityError when none fits (the next ``any_of`` option may): an
    accelerator Kaggle does not have, a retired one (P100), or a restricted one not in
    ``settings.shapes``."""
    if settings.accelerator:
        return settings.accelerator
    acc = resources.get("accelerators")
    if not acc:
        return None
    names = list(acc) if isinstance(acc, (dict, list)) else [acc]
    names = [str(n).split(":", 1)[0].strip() for n in names]
    why = []
    for name in names:
        shape = MACHINE_SHAPES.get(name.upper())
        if shape and shape in settings.shapes:
            return shape
        if shape:
            why.append(f"{name} ({shape}) is restricted to some accounts (LAUNCH_KAGGLE_SHAPES)")
        elif name.upper() in RETIRED:
            why.append(f"{name} is retired (Kaggle would run a {RETIRED[name.upper()]} instead)")
        else:
            why.append(f"Kaggle has no {name}")
    raise NoCapacityError(f"no Kaggle machine for {'/'.join(names)}: {'; '.join(why)}; this account may "
                          f"use {', '.join(settings.shapes)}")


def session_limit(settings: KaggleSettings, kind: str) -> float:
    """The session's limit: the setting, but below the service's maximum for its kind."""
    return min(settings.session_limit, SERVICE_MAX[kind] - TIMEOUT_HEADROOM)


@dataclass(frozen=True)
class KaggleCredentials:
    """Where the SDK will find the API credentials: ``source`` names it, the value stays there."""

    username: str | None
    source: str | None

    @classmethod
    def find(cls) -> KaggleCredentials:
        """The order of the SDK's ``authenticate`` (kaggle 2.2): an access token
        (``KAGGLE_API_TOKEN``, its value or a file it names; ``~/.kaggle/access_token``,
        ``~/.kaggle/access_token.txt``), then the legacy key (``KAGGLE_USERNAME``/``KAGGLE_KEY``,
        ``kaggle.json`` in ``KAGGLE_CONFIG_DIR``, ``~/.kaggle`` or ``~/.config/kaggle``), then
        the OAuth credentials that ``kaggle auth login`` saves in ``~/.kaggle/credentials.json``.
        Reads the username only (a token's user is known once the SDK has asked Kaggle)."""
        if os.environ.get("KAGGLE_API_TOKEN"):
            return cls(os.environ.get("KAGGLE_USERNAME"), "KAGGLE_API_TOKEN")
        for name in ("access_token", "access_token.txt"):
            path = Path.home() / ".kaggle" / name
            if path.is_file() and path.read_text().strip():
                return cls(os.environ.get("KAGGLE_USERNAME"), f"~/.kaggle/{name}")
        if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
            return cls(os.environ["KAGGLE_USERNAME"], "KAGGLE_USERNAME/KAGGLE_KEY")
        for path in _config_files():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("username") and doc.get("key"):
                return cls(os.environ.get("KAGGLE_USERNAME") or str(doc["username"]), str(path))
        oauth = Path.home() / ".kaggle" / "credentials.json"
        try:
            doc = json.loads(oauth.read_text())
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("refresh_token"):
            return cls(str(doc.get("username") or "") or None, "~/.kaggle/credentials.json (kaggle auth login)")
        return cls(None, None)

    @property
    def present(self) -> bool:
        return self.source is not None


def _config_files() -> list[Path]:
    dirs = [os.environ.get("KAGGLE_CONFIG_DIR"), str(Path.home() / ".kaggle"),
            str(Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle")]
    return [Path(d) / "kaggle.json" for d in dirs if d]


MISSING_CREDENTIALS = ("no Kaggle API credentials: run `kaggle auth login`, or set KAGGLE_API_TOKEN "
                       "to a token from https://www.kaggle.com/settings/api (or save it in "
                       "~/.kaggle/access_token); a legacy kaggle.json key works too")
