"""The RBM against scikit-learn's BernoulliRBM on binarised digits, the pseudo-likelihood
estimator against scikit-learn's own, and the forward process's marginals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import BernoulliRBM
from sklearn.utils import check_random_state

from trainers.dbn import diffusion
from trainers.dbn.rbm import ConditionalRBM, fit

HIDDEN, ITERATIONS, BATCH = 64, 10, 10  # the same for both


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only contend on a shared machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return (load_digits().data / 16 > 0.5).astype(np.float64)  # 1797 x 64 bits


def ours_from(sk: BernoulliRBM) -> ConditionalRBM:
    rbm = ConditionalRBM(sk.components_.shape[1], sk.n_components, conditional=False).double()
    with torch.no_grad():
        rbm.W.copy_(torch.from_numpy(sk.components_.T))
        rbm.a.copy_(torch.from_numpy(sk.intercept_visible_))
        rbm.b.copy_(torch.from_numpy(sk.intercept_hidden_))
    return rbm


def test_pseudo_likelihood_is_sklearns_estimator(digits):
    sk = BernoulliRBM(n_components=HIDDEN, n_iter=2, batch_size=BATCH, random_state=3).fit(digits)
    flip = check_random_state(3).randint(0, digits.shape[1], len(digits))  # what sklearn draws
    ours = ours_from(sk).pseudo_log_likelihood(torch.from_numpy(digits),
                                               flip=torch.from_numpy(flip))
    np.testing.assert_allclose(ours.detach().numpy(), sk.score_samples(digits), rtol=0,
                               atol=1e-9)


def test_unconditioned_rbm_is_at_least_as_good_as_bernoulli_rbm(digits):
    torch.manual_seed(0)
    sk = BernoulliRBM(n_components=HIDDEN, n_iter=ITERATIONS, batch_size=BATCH,
                      random_state=0).fit(digits)
    v = torch.from_numpy(digits).float()
    ours = ConditionalRBM(v.shape[1], HIDDEN, conditional=False)
    fit(ours, v, epochs=ITERATIONS, batch_size=BATCH, seed=0)  # the trainer's lr and schedule
    theirs = ours_from(sk).float()
    # The same estimator with the same flipped bits for both, drawn 20 times over every digit.
    g = torch.Generator().manual_seed(1)
    flips = [torch.randint(0, v.shape[1], (len(v),), generator=g) for _ in range(20)]
    with torch.no_grad():
        pll_ours = float(torch.stack([ours.pseudo_log_likelihood(v, flip=f) for f in flips]).mean())
        pll_sk = float(torch.stack([theirs.pseudo_log_likelihood(v, flip=f)
                                    for f in flips]).mean())
    assert pll_ours >= pll_sk, (pll_ours, pll_sk)
    assert pll_sk > -30  # sklearn's RBM did learn (uniform bits score 64 log 0.5 = -44.4)


def test_pcd_gradient_is_model_minus_data_statistics():
    torch.manual_seed(0)
    rbm = ConditionalRBM(6, 4)
    with torch.no_grad():
        rbm.G.normal_()
        rbm.F.normal_()
    v, c = torch.bernoulli(torch.full((5, 6), 0.5)), torch.bernoulli(torch.full((5, 6), 0.5))
    chains = torch.zeros(8, 4)
    state = torch.get_rng_state()
    rbm.pcd_step(v, c, chains, k=2)
    torch.set_rng_state(state)  # replay the same draws by hand
    h = torch.zeros(5, 4)
    for _ in range(2):
        vm = torch.bernoulli(torch.sigmoid(rbm.visible_field(h, c)))
        hm = torch.sigmoid(rbm.hidden_field(vm, c))
        h = torch.bernoulli(hm)
    hd = torch.sigmoid(rbm.hidden_field(v, c))
    torch.testing.assert_close(rbm.W.grad, -(v.t() @ hd - vm.t() @ hm) / 5)
    torch.testing.assert_close(rbm.G.grad, -((v - vm).t() @ c) / 5)
    torch.testing.assert_close(rbm.F.grad, -(c.t() @ (hd - hm)) / 5)
    torch.testing.assert_close(chains[:5], h)
    assert chains[5:].abs().sum() == 0  # chains beyond the batch are left alone


@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
def test_forward_pairs_have_the_chains_flip_rates(kind):
    beta = diffusion.betas(kind, 6, 0.02, 0.5)
    cum = diffusion.flip_probs(beta)
    assert float(cum[-1]) == pytest.approx(0.5, abs=1e-6) and bool((beta <= 0.5).all())
    x0 = torch.zeros(20000, 8)
    g = torch.Generator().manual_seed(0)
    prev, cur = diffusion.pair(x0, 3, beta, cum, g)
    assert float(prev.mean()) == pytest.approx(float(cum[2]), abs=0.01)
    assert float((prev != cur).float().mean()) == pytest.approx(float(beta[2]), abs=0.01)
    assert float(cur.mean()) == pytest.approx(float(cum[3]), abs=0.01)
