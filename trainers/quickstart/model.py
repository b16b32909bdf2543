"""A small CNN: three conv blocks, global average pooling, dropout, a linear head.

Batch norm (running statistics in buffers) and dropout (draws from the global RNG) are there on
purpose: both are state that a careless checkpoint forgets, and exact resume must survive them.
The global pooling is a plain mean: ``nn.AdaptiveAvgPool2d``'s CUDA backward has no deterministic
implementation, and deterministic mode would refuse it on a GPU.
"""

from __future__ import annotations

from torch import nn


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(
            conv_block(3, width, pool=True),
            conv_block(width, 2 * width, pool=True),
            conv_block(2 * width, 4 * width, pool=False),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))
