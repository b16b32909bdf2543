"""The four architectures (torchvision), their 7-class heads, and where Grad-CAM looks.

``resnet50``, ``efficientnet_b3``, ``densenet121`` and ``vit_b_16`` are the comparison; any other
torchvision classification model name also works (a smaller one makes a quick try). ViT-B/16 is
built for ``image_size`` (a multiple of 16): its patch grid is ``image_size / 16`` a side, and
pretrained position embeddings are interpolated to that grid.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ARCHS = ("resnet50", "efficientnet_b3", "densenet121", "vit_b_16")
VIT_PATCH = 16


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh ``Linear`` for ``num_classes`` in place of the last one (the classifier)."""
    name, head = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    if head.out_features != num_classes:
        parent = model.get_submodule(name.rpartition(".")[0])
        setattr(parent, name.rpartition(".")[2], nn.Linear(head.in_features, num_classes))
    return model


def build_model(arch: str, num_classes: int, pretrained: bool, image_size: int) -> nn.Module:
    """``torchvision.models.<arch>`` with a ``num_classes`` head; ``pretrained`` starts from
    torchvision's ImageNet weights (a download, where the machine has internet)."""
    from torchvision import models
    from torchvision.models import vision_transformer as vt

    if arch not in models.list_models(module=models):
        raise ValueError(f"unknown architecture {arch!r} (the comparison: {', '.join(ARCHS)}; "
                         f"any torchvision classification model name works)")
    if arch.startswith("vit_"):
        patch = int(arch.rsplit("_", 1)[1])
        if image_size % patch:
            raise ValueError(f"{arch} needs --image-size divisible by {patch}, got {image_size}")
        model = models.get_model(arch, weights=None, image_size=image_size,
                                 num_classes=num_classes)
        if pretrained:
            state = models.get_model(arch, weights="DEFAULT").state_dict()
            state = vt.interpolate_embeddings(image_size, patch, state)
            state = {k: v for k, v in state.items() if not k.startswith("heads.")}
            model.load_state_dict(state, strict=False)
        return model
    if not pretrained:
        return models.get_model(arch, num_classes=num_classes)
    return _replace_head(models.get_model(arch, weights="DEFAULT"), num_classes)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cam_target(model: nn.Module, arch: str) -> tuple[list[nn.Module], Callable | None]:
    """Grad-CAM's target layers and reshape transform: the last convolutional block, or for a
    ViT the last encoder block's input norm, whose tokens (class token dropped) are laid out on
    the patch grid as a ``(B, C, H, W)`` map."""
    if arch.startswith("vit_"):
        grid = model.image_size // model.patch_size

        def reshape(tokens: torch.Tensor) -> torch.Tensor:
            x = tokens[:, 1:, :].reshape(tokens.shape[0], grid, grid, tokens.shape[2])
            return x.permute(0, 3, 1, 2)

        return [model.encoder.layers[-1].ln_1], reshape
    if arch.startswith("resnet") or arch.startswith("wide_resnet") or arch.startswith("resnext"):
        return [model.layer4[-1]], None
    if hasattr(model, "features"):  # densenet, efficientnet, mobilenet, vgg, ...
        return [model.features[-1]], None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{arch}: no convolution to take Grad-CAM from")
    return [convs[-1]], None
