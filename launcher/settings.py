"""Reading backend settings from ``LAUNCH_*`` environment variables, with errors that name the
variable (a bad value is a user error, not a traceback)."""

from __future__ import annotations

import os

from launcher.errors import InfraError


def env_float(name: str, default: float | None) -> float | None:
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return float(v)
    except ValueError:
        raise InfraError(f"{name}={v!r}: expected a number") from None


def env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name, "").strip().lower()
    return default if not v else v not in ("0", "false", "no", "off")
