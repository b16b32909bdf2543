"""The diffusion itself: parameters in range, flat images stay flat, the attention matters,
gradients reach every learned parameter, and tiling changes no pixel."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.denoise.apply import denoise
from trainers.denoise.model import DiffusionConfig, GraphDiffusionDenoiser, build

SMALL = dict(stride=4, max_radius=6.0, steps=2)


def noisy_batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, size, size).clone()
    clean[:, :, size // 2:] = 1 - clean[:, :, size // 2:]  # an edge across the middle
    return clean, clean + 0.1 * torch.randn(clean.shape, generator=g)


def test_parameters_start_where_configured_and_stay_in_range():
    m = build({**SMALL, "init_tau": 0.3, "init_tau_later": 0.2, "init_radius": 2.5})
    learned = m.learned()
    assert learned["tau"] == [pytest.approx(0.3), pytest.approx(0.2)]
    assert learned["radius"] == pytest.approx(2.5) and learned["sigma_s"] == pytest.approx(10.0)
    with torch.no_grad():
        for p in (m.raw_sigma, m.raw_tau, m.raw_sigma_s, m.raw_radius):
            p.fill_(-50.0)
    assert (m.sigma() > 0).all() and (m.tau() > 0).all() and m.sigma_s() > 0 and m.radius() > 0
    with torch.no_grad():
        m.raw_tau.fill_(50.0), m.raw_radius.fill_(50.0)
    assert (m.tau() <= 1.0).all() and m.radius() <= 6.0


def test_a_flat_image_stays_flat():
    m = build(SMALL)
    flat = torch.full((1, 3, 24, 28), 0.37)
    assert torch.allclose(m(flat, 0.1), flat, atol=1e-6)


def test_denoising_moves_the_image_towards_the_clean_one():
    clean, noisy = noisy_batch()
    out = build(SMALL)(noisy, 0.1)
    assert ((out - clean) ** 2).mean() < 0.5 * ((noisy - clean) ** 2).mean()


@pytest.mark.parametrize("cfg", [SMALL, {**SMALL, "steps": 1, "stride": 1, "max_radius": 3.0,
                                         "init_radius": 2.5}])
def test_attention_starts_neutral_then_changes_the_output_and_gets_gradients(cfg):
    torch.manual_seed(0)
    with_attn = build({**cfg, "attention": True})
    without = build({**cfg, "attention": False})
    without.load_state_dict({k: v for k, v in with_attn.state_dict().items()
                             if k in without.state_dict()})
    _, noisy = noisy_batch()
    assert torch.allclose(with_attn(noisy, 0.1), without(noisy, 0.1), atol=1e-6)
    with torch.no_grad():  # keys as training moves them away from zero
        with_attn.key.weight.normal_(0, 0.3)
    a, b = with_attn(noisy, 0.1), without(noisy, 0.1)
    assert (a - b).abs().max() > 1e-4
    a.sum().backward()
    for name, p in with_attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cfg", [dict(patch=5, stride=1, max_radius=3.0, init_radius=2.5),
                                 dict(patch=6, stride=2, max_radius=5.0, init_radius=4.0),
                                 dict(patch=8, stride=4, max_radius=8.0)])
def test_the_per_pixel_step_is_the_literal_patch_step(cfg):
    """One step computed per pixel (the fast path) equals diffusing the unfolded patches on the
    banded graph and folding them back, to float64 rounding, attention included."""
    torch.manual_seed(0)
    m = build({**cfg, "steps": 1}).double()
    with torch.no_grad():
        m.key.weight.normal_(0, 0.3)
    x = torch.rand(2, 3, 29, 35, dtype=torch.double)
    fast = m(x, 0.1)
    m.config.reaggregate = False
    m.config.steps = 2  # forward takes the patch path; one step of it by hand below
    c = m.config
    ph, pw = m.padded_size(29, 35)
    xp = torch.nn.functional.pad(x, (0, pw - 35, 0, ph - 29), mode="reflect")
    gh, gw = (ph - c.patch) // c.stride + 1, (pw - c.patch) // c.stride + 1
    P = torch.nn.functional.unfold(xp, c.patch, stride=c.stride).view(2, -1, gh, gw)
    spatial = (torch.exp(-m.offset_dist ** 2 / (2 * m.sigma_s() ** 2))
               * torch.sigmoid((m.radius() - m.offset_dist) / 0.5))
    P = m._step(P, spatial, 2 * m.sigma()[0] ** 2 * 0.01, 2 * m.bias()[0] * 0.01, m.tau()[0])
    fold = torch.nn.functional.fold
    count = fold(torch.ones(1, c.patch ** 2, gh * gw, dtype=x.dtype), (ph, pw), c.patch,
                 stride=c.stride)
    literal = (fold(P.reshape(2, -1, gh * gw), (ph, pw), c.patch, stride=c.stride) / count)
    assert torch.allclose(fast, literal[..., :29, :35], atol=1e-12)


def test_the_untrained_default_already_clears_the_bar():
    """The default start is non-local means in graph form: before any training, at sigma 25, it
    beats the noisy input by 6 dB and the best Gaussian blur and bilateral filter (fitted on
    these very images) by 1 dB, on natural-looking images and on a real photograph."""
    from trainers.denoise import baselines, data, report, synthetic

    x, _ = synthetic.make_images(8, seed=5)
    photo = report.photo("coffee", 64)
    for clean in (data.to_tensor(x), photo[None]):
        noisy = clean + data.fixed_noise(clean.shape, 25 / 255, seed=5)
        with torch.no_grad():
            ours = baselines.score(build()(noisy, 25 / 255), clean)["psnr"]
        fitted = baselines.fit_all(noisy, clean)
        scores = {k: baselines.score(v, clean)["psnr"]
                  for k, v in baselines.run_all(noisy, fitted).items() if k != "nl_means"}
        assert ours > scores["noisy"] + 6, (ours, scores)
        assert ours > max(scores["gaussian_blur"], scores["bilateral"]) + 1.0, (ours, scores)


def test_the_band_holds_only_offsets_within_the_radius():
    m = GraphDiffusionDenoiser(DiffusionConfig(stride=2, max_radius=4.0, init_radius=3.0))
    assert (m.offset_dist <= 4.0).all() and len(m.offsets) == 13  # |(dy,dx)| <= 2 grid steps
    assert [0, 0] in m.offsets.tolist()


def test_any_size_and_grey_images():
    m = build(SMALL)
    x = torch.rand(3, 13, 45)
    assert denoise(m, x, 0.1).shape == x.shape
    grey = torch.rand(1, 20, 9)
    assert denoise(m, grey, 0.1).shape == grey.shape


def test_tiles_give_the_pixels_of_one_pass():
    m = build(SMALL)
    x = torch.rand(3, 70, 93)
    whole = denoise(m, x, 0.1, tile=10_000)
    tiled = denoise(m, x, 0.1, tile=24)
    assert torch.allclose(whole, tiled, atol=1e-5), (whole - tiled).abs().max()


def test_parameters_are_learned_by_gradient_descent():
    torch.manual_seed(0)
    m = build(SMALL)
    start = m.learned()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    clean, _ = noisy_batch(n=4)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(25):
        noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
        loss = ((m(noisy, 0.1) - clean) ** 2).mean()
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    end = m.learned()
    assert sum(losses[-5:]) < sum(losses[:5])
    assert not math.isclose(end["sigma_s"], start["sigma_s"], rel_tol=1e-3)
    assert any(abs(a - b) > 1e-3 for a, b in zip(end["tau"], start["tau"]))
