"""Deciding whether a checkpoint may be resumed, and the best-metric bookkeeping it carries.

A checkpoint records the config it was written under. Resuming it under another config (another
learning rate, more epochs) would silently mix two experiments, so it is refused with one line
that names what changed, unless the user forces it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launcher import contract
from trainers.common.errors import ResumeRefused


def json_clean(config: dict[str, Any]) -> dict[str, Any]:
    """The config as plain JSON values, as it is fingerprinted (Paths become strings)."""
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"lr 0.05 -> 0.1, epochs 5 -> 6"``; empty when nothing differs."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}"
                     for k in keys if old.get(k) != new.get(k))


def check_fingerprint(folder: Path, saved_fp: str | None, saved_config: dict[str, Any] | None,
                      config: dict[str, Any], fingerprint: str, force: bool) -> str | None:
    """None when the fingerprints match; the change (a string) when they differ and ``force``;
    otherwise raises ``ResumeRefused`` with a one-line message."""
    if saved_fp == fingerprint:
        return None
    diff = config_diff(saved_config or {}, config) or f"fingerprint {saved_fp} -> {fingerprint}"
    if force:
        return diff
    raise ResumeRefused(
        f"checkpoint {folder} was written with another config (changed: {diff}); refusing to "
        f"resume. Use --force-resume or {contract.ENV_FORCE_RESUME}=1 to resume anyway, or "
        f"another --checkpoint-dir to start afresh")


def better(best: dict[str, Any] | None, key: str | None, mode: str | None,
           metrics: dict[str, Any], step: int, epoch: int) -> dict[str, Any] | None:
    """The new best record when ``metrics[key]`` beats ``best`` (or there is none yet), else
    ``best`` unchanged."""
    if key is None or metrics.get(key) is None:
        return best
    value = float(metrics[key])
    if best is not None and not (value > best["value"] if mode == "max" else value < best["value"]):
        return best
    return {"key": key, "mode": mode, "value": value, "step": step, "epoch": epoch}


def manifest_best(key: str | None, mode: str | None, metrics: dict[str, Any],
                  metrics_step: int | None) -> dict[str, Any] | None:
    """The manifest's ``best`` entry for the store's retention: this checkpoint's own (latest)
    value of the key and the step it was measured at; later checkpoints carry it until the next
    evaluation, and retention keeps the earliest of equal values (see ``checkpoint.prune``)."""
    if key is None or metrics.get(key) is None:
        return None
    return {"key": key, "mode": mode, "value": float(metrics[key]), "step": metrics_step}
