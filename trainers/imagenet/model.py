"""The network (any torchvision classification model, ResNet-50 by default) and its precision."""

from __future__ import annotations

from torch import nn

# Shared with the other trainers; still importable from here.
from trainers.common.amp import autocast_for, resolve_amp  # noqa: F401


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
