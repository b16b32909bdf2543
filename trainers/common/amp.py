"""Mixed precision as the bundled trainers choose it: fp16 with a GradScaler on CUDA, float32 on
a CPU (where it is both the fastest without bf16 hardware and bit-exact across a resume)."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch


def resolve_amp(mode: str, device: torch.device) -> str:
    """``auto`` is fp16 (with a GradScaler) on CUDA and off on a CPU, where float32 is both the
    fastest without bf16 hardware and bit-exact across a resume."""
    if mode == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs CUDA; on a CPU use bf16 or off")
    return mode


def autocast_for(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts (``nullcontext`` when AMP is off):
    ``with autocast(): ...``."""
    if amp == "off":
        return contextlib.nullcontext
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return functools.partial(torch.autocast, device.type, dtype=dtype)


def optimizer_step(optimizer: torch.optim.Optimizer, params, scaler: torch.amp.GradScaler | None,
                   clip: float | None) -> None:
    """Finish an (accumulated) step: unscale the gradients, clip their global norm to ``clip``
    (skipped when None or <= 0), step and update the scaler. With a scaler the step is skipped
    when a gradient is inf/NaN, and the scale shrinks; the loop goes on as usual."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip is not None and clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
