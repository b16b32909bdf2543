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
``LAUNCH_KAGGLE_MIN_SESSION``             shortest session worth pushing  1800 (30 min)
========================================  ==============================  ==============
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from launcher.backends.base import NoCapacityError
from launcher.settings import env_bool, env_float

# SkyPilot accelerator names -> Kaggle machine shapes (``kaggle kernels push --accelerator``).
# T4 and L4 sessions come with several cards (T4 x2, L4 x4); Kaggle offers no other choice.
MACHINE_SHAPES = {
    "P100": "NvidiaTeslaP100",
    "T4": "NvidiaTeslaT4",
    "L4": "NvidiaL4",
    "A100": "NvidiaTeslaA100",
    "H100": "NvidiaH100",
}


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
    min_session: float = 1800.0

    @classmethod
    def from_env(cls) -> KaggleSettings:
        d = cls()
        return cls(
            session_limit=env_float("LAUNCH_KAGGLE_SESSION_LIMIT", d.session_limit),
            margin=env_float("LAUNCH_KAGGLE_MARGIN", d.margin),
            enable_gpu=env_bool("LAUNCH_KAGGLE_GPU", d.enable_gpu),
            enable_internet=env_bool("LAUNCH_KAGGLE_INTERNET", d.enable_internet),
            accelerator=os.environ.get("LAUNCH_KAGGLE_ACCELERATOR") or None,
            poll_interval=env_float("LAUNCH_KAGGLE_POLL_INTERVAL", d.poll_interval),
            control_interval=env_float("LAUNCH_KAGGLE_CONTROL_INTERVAL", d.control_interval),
            start_grace=env_float("LAUNCH_KAGGLE_START_GRACE", d.start_grace),
            log_interval=env_float("LAUNCH_KAGGLE_LOG_INTERVAL", d.log_interval),
            endpoint=(os.environ.get("LAUNCH_KAGGLE_ENDPOINT") or "").rstrip("/") or None,
            weekly_gpu_hours=env_float("LAUNCH_KAGGLE_WEEKLY_GPU_HOURS", d.weekly_gpu_hours),
            min_session=env_float("LAUNCH_KAGGLE_MIN_SESSION", d.min_session),
        )

    @property
    def usable(self) -> float:
        """Seconds of training a session gives: the limit less the stop margin."""
        return max(0.0, self.session_limit - self.margin)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_shape(resources: dict[str, Any], settings: KaggleSettings) -> str | None:
    """The Kaggle machine shape for a resources option: ``LAUNCH_KAGGLE_ACCELERATOR`` wins, then
    the task's ``accelerators`` (of a list, the first Kaggle has); None is Kaggle's default GPU.
    Raises NoCapacityError for accelerators Kaggle does not offer."""
    if settings.accelerator:
        return settings.accelerator
    acc = resources.get("accelerators")
    if not acc:
        return None
    names = list(acc) if isinstance(acc, (dict, list)) else [acc]
    names = [str(n).split(":", 1)[0].strip() for n in names]
    for name in names:
        shape = MACHINE_SHAPES.get(name.upper())
        if shape:
            return shape
    raise NoCapacityError(f"Kaggle offers no {'/'.join(names)}; it has {', '.join(MACHINE_SHAPES)} "
                          "(or set LAUNCH_KAGGLE_ACCELERATOR to a Kaggle machine shape)")


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
