"""Seeding and deterministic mode: the precondition for a resume that is bit-identical.

Restoring RNG states is not enough on its own: cuDNN's autotuner and some atomics-based CUDA
kernels give different floating-point results from one run to the next, so a resumed run would
drift from an uninterrupted one even with every state restored. Deterministic mode removes that.
"""

from __future__ import annotations

import os
import random

import torch

# cuBLAS needs a fixed workspace to be deterministic (see the PyTorch reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed python, numpy (when installed) and torch (every CUDA device included)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)


def enable_determinism(seed: int | None = None) -> None:
    """Seed (if ``seed`` is given) and switch torch to deterministic algorithms.

    Call it before any CUDA work: ``CUBLAS_WORKSPACE_CONFIG`` is read when cuBLAS starts. An op
    without a deterministic implementation then raises instead of silently breaking exact resume.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if seed is not None:
        seed_everything(seed)
