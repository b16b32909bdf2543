"""The binary autoencoder: 32 x 32 RGB images to bit codes and back.

Encoder: three stride-2 convolutions (32 -> 16 -> 8 -> 4) and a 1 x 1 convolution to
``code_channels`` logits per cell, so a code has ``code_channels * 16`` bits. In training each
bit is drawn from Bernoulli(sigmoid(logit)) and the decoder sees that sample; the gradient goes
through the probability as if the draw were the identity (straight-through estimator). A code
for the diffusion is the deterministic one (probability > 0.5). Decoder: the mirror image, with
transposed convolutions, ending in a sigmoid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

GRID = 4  # a code is code_channels x GRID x GRID bits


@dataclass
class AEConfig:
    width: int = 32
    code_channels: int = 16

    @property
    def bits(self) -> int:
        return self.code_channels * GRID * GRID

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BinaryAutoencoder(nn.Module):
    def __init__(self, config: AEConfig):
        super().__init__()
        w, c = config.width, config.code_channels
        self.config = config
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, c, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 2 * w, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Sigmoid())

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction through sampled bits (straight-through gradient)."""
        p = self.probabilities(images)
        bits = torch.bernoulli(p.detach())
        return self.decoder(bits + p - p.detach())

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Deterministic codes, N x bits, as 0/1 floats."""
        return torch.cat([(self.probabilities(x) > 0.5).float().flatten(1)
                          for x in images.split(batch_size)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        c = self.config.code_channels
        return torch.cat([self.decoder(x.view(-1, c, GRID, GRID))
                          for x in codes.float().split(batch_size)])
