"""The network (any torchvision classification model, ResNet-50 by default) and its precision."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import torch
from torch import nn


def build_model(arch: str, num_classes: int, pretrained: bool) -> nn.Module:
    """``torchvision.models.<arch>``; with ``pretrained`` its default ImageNet weights (a
    download, where the machine has internet) and, for another number of classes, a new head."""
    from torchvision import models

    if arch not in models.list_models(module=models):
        raise ValueError(f"unknown --arch {arch!r}; torchvision classification models include "
                         f"resnet18, resnet50, resnet101, wide_resnet50_2, efficientnet_b0, ...")
    if not pretrained:
        return models.get_model(arch, num_classes=num_classes)
    model = models.get_model(arch, weights="DEFAULT")
    name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    if head.out_features != num_classes:
        parent = model.get_submodule(name.rpartition(".")[0])
        setattr(parent, name.rpartition(".")[2], nn.Linear(head.in_features, num_classes))
    return model


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
