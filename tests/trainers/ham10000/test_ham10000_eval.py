"""Temperature scaling and the four architectures' heads and Grad-CAM targets."""

from __future__ import annotations

import pytest
import torch

from trainers.ham10000 import evaluate as ev
from trainers.ham10000.data import CLASSES
from trainers.ham10000.model import ARCHS, build_model


def overconfident(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    logits = torch.randn(n, len(CLASSES), generator=g)
    logits[torch.arange(n), labels] += 1.5  # informative ...
    return logits * 4, labels  # ... and far too sharp


def test_temperature_scaling_keeps_accuracy_and_lowers_nll():
    logits, labels = overconfident()
    result = ev.analyse(logits, labels)
    assert result["temperature"] > 2  # it found the sharpening
    assert result["nll_after"] < result["nll_before"]
    assert result["ece_after"] < result["ece_before"]
    assert result["accuracy"] == pytest.approx(result["accuracy_before"])
    # The fitted T is the NLL minimum: nudging it either way is worse.
    t = result["temperature"]
    assert ev.nll(logits, labels, t) <= min(ev.nll(logits, labels, t * 0.97),
                                            ev.nll(logits, labels, t * 1.03))


def test_temperature_never_raises_nll_on_calibrated_logits():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, len(CLASSES), (300,), generator=g)
    logits = torch.randn(300, len(CLASSES), generator=g)
    t = ev.fit_temperature(logits, labels)
    assert ev.nll(logits, labels, t) <= ev.nll(logits, labels, 1.0) + 1e-12


def test_reliability_bins_are_the_ones_ece_sums():
    logits, labels = overconfident(seed=2)
    probs = ev.probabilities(logits)
    bins = ev.reliability_bins(probs, labels)
    assert len(bins["accuracy"]) == ev.ECE_BINS
    gap = sum(abs(a - c) * p for a, c, p in zip(bins["accuracy"], bins["confidence"],
                                                bins["proportion"]))
    assert gap == pytest.approx(ev.ece(probs, labels), abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_has_a_seven_class_head_and_a_gradcam_map(arch):
    torch.manual_seed(0)
    size = 32
    model = build_model(arch, len(CLASSES), pretrained=False, image_size=size)
    x = torch.randn(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, len(CLASSES))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps = ev.gradcam_maps(model, arch, x)
    assert maps.shape == (2, size, size) and maps.dtype == torch.uint8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    if arch == "vit_b_16":
        assert model.image_size == size and model.patch_size == 16  # a 2x2 patch grid


def test_vit_needs_a_size_its_patches_divide():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_model("vit_b_16", len(CLASSES), pretrained=False, image_size=40)
