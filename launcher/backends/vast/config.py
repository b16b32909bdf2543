"""Settings of the Vast.ai backend, and where its API key comes from (kept apart).

``VastSettings`` holds what may be stored with a job (price cap, reliability floor, bid factor,
image, timings); every field has an environment variable, and the environment wins over the
default. ``VastCredentials`` only says *whether* and *where* the ``vastai`` SDK will find the API
key; the key itself is never read into our objects, stored or logged: the SDK reads it from its
usual places.

========================================  ==========================================  ===========
variable                                  meaning                                     default
========================================  ==========================================  ===========
``LAUNCH_VAST_MAX_PRICE``                 price cap, $/h for the whole machine        none
``LAUNCH_VAST_MIN_RELIABILITY``           reliability floor (0..1)                    0.95
``LAUNCH_VAST_BID_FACTOR``                bid = offer's minimum bid x this            1.25
``LAUNCH_VAST_MAX_OUTBIDS``               outbids of a job before renting on-demand   3
``LAUNCH_VAST_IMAGE``                     docker image (``image_id: docker:X`` wins)  PyTorch
``LAUNCH_VAST_DISK_GB``                   disk when the task sets no ``disk_size``    32
``LAUNCH_VAST_SSH_KEY``                   private key; its ``.pub`` is attached       ~/.ssh/id_ed25519
``LAUNCH_VAST_BOOT_TIMEOUT``              seconds for an instance to reach running    600
``LAUNCH_VAST_API_POLL``                  seconds between instance-state checks       15
``LAUNCH_VAST_OFFERS_TRIED``              offers tried per attempt when one is taken  3
``LAUNCH_VAST_MIN_INET_DOWN``             least download bandwidth of an offer, Mb/s  100
``LAUNCH_VAST_SETTLE``                    seconds to wait for the API's word (a new   30
                                          instance to be listed, a lost one's state)
``LAUNCH_VAST_CREATE_SETTLE``             seconds after a create call by which what   60
                                          it made is listed: a create row of a dead
                                          process is closed after that
``LAUNCH_VAST_API_PACE``                  scale of the API's rate limits we keep to   1
``LAUNCH_VAST_RATE_LIMIT_WAIT``           seconds of 429s before a call gives up      300
``VAST_URL``                              another API server (the SDK's variable)     console.vast.ai
========================================  ==========================================  ===========
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from launcher.settings import env_float

DEFAULT_IMAGE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_rsa")


def _default_key() -> str:
    for k in DEFAULT_KEYS:
        if Path(k).expanduser().is_file():
            return str(Path(k).expanduser())
    return str(Path(DEFAULT_KEYS[0]).expanduser())


@dataclass(frozen=True)
class VastSettings:
    max_price: float | None = None
    min_reliability: float = 0.95
    bid_factor: float = 1.25
    max_outbids: int = 3
    image: str = DEFAULT_IMAGE
    disk_gb: float = 32.0
    ssh_key: str = ""
    boot_timeout: float = 600.0
    api_poll: float = 15.0
    offers_tried: int = 3
    min_inet_down: float = 100.0
    settle: float = 30.0
    create_settle: float = 60.0
    api_pace: float = 1.0
    rate_limit_wait: float = 300.0
    server_url: str | None = None

    @classmethod
    def from_env(cls) -> VastSettings:
        d = cls()
        return cls(
            max_price=env_float("LAUNCH_VAST_MAX_PRICE", d.max_price),
            min_reliability=env_float("LAUNCH_VAST_MIN_RELIABILITY", d.min_reliability),
            bid_factor=env_float("LAUNCH_VAST_BID_FACTOR", d.bid_factor),
            max_outbids=int(env_float("LAUNCH_VAST_MAX_OUTBIDS", d.max_outbids)),
            image=os.environ.get("LAUNCH_VAST_IMAGE") or d.image,
            disk_gb=env_float("LAUNCH_VAST_DISK_GB", d.disk_gb),
            ssh_key=os.path.expanduser(os.environ.get("LAUNCH_VAST_SSH_KEY") or _default_key()),
            boot_timeout=env_float("LAUNCH_VAST_BOOT_TIMEOUT", d.boot_timeout),
            api_poll=env_float("LAUNCH_VAST_API_POLL", d.api_poll),
            offers_tried=max(1, int(env_float("LAUNCH_VAST_OFFERS_TRIED", d.offers_tried))),
            min_inet_down=env_float("LAUNCH_VAST_MIN_INET_DOWN", d.min_inet_down),
            settle=env_float("LAUNCH_VAST_SETTLE", d.settle),
            create_settle=env_float("LAUNCH_VAST_CREATE_SETTLE", d.create_settle),
            api_pace=env_float("LAUNCH_VAST_API_PACE", d.api_pace),
            rate_limit_wait=env_float("LAUNCH_VAST_RATE_LIMIT_WAIT", d.rate_limit_wait),
            server_url=(os.environ.get("VAST_URL") or "").rstrip("/") or None,
        )

    def public_key(self) -> str:
        """The text of ``<ssh_key>.pub``: what the instance is told to accept."""
        pub = Path(f"{self.ssh_key}.pub")
        try:
            return pub.read_text().strip()
        except OSError:
            from launcher.errors import InfraError

            raise InfraError(f"Vast.ai instances are reached over SSH with {self.ssh_key}, but {pub} "
                             "cannot be read: create a key (ssh-keygen -t ed25519) or point "
                             "LAUNCH_VAST_SSH_KEY at one") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VastCredentials:
    """Where the SDK will find the API key: ``source`` names the place, the value stays there."""

    source: str | None

    @classmethod
    def find(cls) -> VastCredentials:
        """The SDK's own order: ``VAST_API_KEY``, ``$XDG_CONFIG_HOME/vastai/vast_api_key`` (or
        ``~/.config/vastai/vast_api_key``), then the legacy ``~/.vast_api_key``."""
        if os.environ.get("VAST_API_KEY"):
            return cls("VAST_API_KEY")
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        for path in (config / "vastai" / "vast_api_key", Path.home() / ".vast_api_key"):
            if path.is_file():
                return cls(str(path))
        return cls(None)

    @property
    def present(self) -> bool:
        return self.source is not None


REFUSED_CREDENTIALS = ("Vast.ai refused the API key ({detail}): check VAST_API_KEY or "
                       "~/.config/vastai/vast_api_key (`vastai set api-key KEY`); keys are at "
                       "https://cloud.vast.ai/manage-keys/")

MISSING_CREDENTIALS = ("no Vast.ai API key: set VAST_API_KEY, or run `vastai set api-key KEY` "
                       "(it saves the key in ~/.config/vastai/vast_api_key); the key is at "
                       "https://cloud.vast.ai/manage-keys/")
