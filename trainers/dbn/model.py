"""Everything the job trains, in one module (so one ``state_dict`` holds it): the autoencoder,
one conditional RBM per timestep, and the persistent chains of the timestep in training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from trainers.dbn.autoencoder import AEConfig, BinaryAutoencoder
from trainers.dbn.rbm import ConditionalRBM


@dataclass
class ModelConfig:
    width: int = 32
    code_channels: int = 16
    hidden: int = 256
    timesteps: int = 50
    chains: int = 64  # persistent chains: one per row of a training batch

    @property
    def bits(self) -> int:
        return self.ae.bits

    @property
    def ae(self) -> AEConfig:
        return AEConfig(self.width, self.code_channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatentDiffusion(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.ae = BinaryAutoencoder(config.ae)
        self.rbms = nn.ModuleList(ConditionalRBM(config.bits, config.hidden)
                                  for _ in range(config.timesteps))
        # Hidden samples of the chains; zeroed when a timestep starts (as scikit-learn starts).
        self.register_buffer("chains", torch.zeros(config.chains, config.hidden))


def build(config: dict[str, Any], seed: int = 0) -> LatentDiffusion:
    """The model with its initial weights drawn from ``seed`` alone (the global generators are
    left as they were)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LatentDiffusion(ModelConfig(**config))
