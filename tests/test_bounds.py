"""Bounds against the truth: a linear-Gaussian model has an exact log p(x)."""
import math

import pytest
import torch

from elbolab.bounds import bound_curve, elbo, importance_sample, iwae, kl_term
from elbolab.errors import ConfigError
from elbolab.models import VAE, LinearGaussian


def linear_gaussian(seed=0, data_dim=6, latent_dim=3):
    """A model whose encoder is near, but deliberately off, the exact posterior (so the bounds have a gap)."""
    torch.manual_seed(seed)
    model = LinearGaussian(data_dim, latent_dim, sigma=0.7)
    with torch.no_grad():
        model.b.copy_(torch.randn(data_dim))
        model.set_exact_encoder()  # exact means, but a diagonal covariance: W's columns are not orthogonal
        model.encoder.weight.add_(0.1 * torch.randn(latent_dim, data_dim))
        model.log_scale.add_(0.2)
        x = model.likelihood(model.prior().sample((200,))).sample()  # data from the model itself
    return model, x


@torch.no_grad()
def test_bounds_are_ordered_and_converge_to_exact_log_likelihood():
    model, x = linear_gaussian()
    torch.manual_seed(1)
    exact = model.exact_log_marginal(x).mean().item()
    terms = importance_sample(model, x, k=5000, k_chunk=1000)
    curve = {k: v.mean().item() for k, v in bound_curve(terms.log_weights, [1, 5, 50, 5000]).items()}
    # Averaged over 200 points the Monte-Carlo error of each L_k is far below these margins.
    assert curve[1] < curve[5] - 0.05 < curve[50] - 0.1
    assert curve[50] <= exact + 0.01
    assert abs(curve[5000] - exact) < 0.02, (curve, exact)
    assert abs(terms.value.mean().item() - exact) < 0.02


@torch.no_grad()
def test_exact_encoder_gives_exact_elbo():
    torch.manual_seed(0)
    model = LinearGaussian(5, 2, sigma=0.5)
    with torch.no_grad():  # orthogonal columns: the exact posterior is diagonal
        q, _ = torch.linalg.qr(torch.randn(5, 2))
        model.W.copy_(q * torch.tensor([2.0, 0.7]))
    model.set_exact_encoder()
    x = torch.randn(100, 5)
    terms = elbo(model, x, k=1)
    # With q = p(z|x) every log-weight equals log p(x): the ELBO has no variance and no gap.
    torch.testing.assert_close(terms.log_weights[0], model.exact_log_marginal(x), rtol=0, atol=1e-4)


def test_iwae_with_one_sample_is_the_elbo():
    torch.manual_seed(0)
    model = VAE(20, 3, hidden=[16])
    x = torch.bernoulli(torch.full((32, 20), 0.4))
    torch.manual_seed(5)
    a = iwae(model, x, k=1).value
    torch.manual_seed(5)
    b = elbo(model, x, k=1, analytic_kl=False).value
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_analytic_kl_equals_monte_carlo_kl():
    torch.manual_seed(0)
    model = VAE(20, 4, hidden=[16])
    x = torch.bernoulli(torch.full((8, 20), 0.4))
    with torch.no_grad():
        lw = model.log_weights(x, k=200_000)
        analytic = kl_term(lw, analytic=True)
        monte_carlo = kl_term(lw, analytic=False)
    # MC standard error with 2e5 samples is ~ sd / 450; the KLs here are O(1).
    torch.testing.assert_close(monte_carlo, analytic, rtol=0.02, atol=0.01)


def test_beta_scales_only_the_kl_term():
    torch.manual_seed(0)
    model = VAE(20, 3, hidden=[16])
    x = torch.bernoulli(torch.full((8, 20), 0.4))
    torch.manual_seed(3)
    one = elbo(model, x, beta=1.0)
    torch.manual_seed(3)
    four = elbo(model, x, beta=4.0)
    torch.testing.assert_close(one.reconstruction, four.reconstruction)
    torch.testing.assert_close(four.value, one.reconstruction - 4.0 * one.kl)


def _mean_gradient(model, x, k, estimator, replicas):
    """The estimator's gradient averaged over `replicas` independent draws (one batched pass)."""
    model.zero_grad()
    xs = x.repeat(replicas, 1)
    iwae(model, xs, k=k, estimator=estimator).value.sum().div(replicas).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _close(a, b, tol):
    for name in a:
        err = (a[name] - b[name]).norm() / (a[name].norm() + 1e-8)
        assert err < tol, f"{name}: relative difference {err:.3f}"


def test_gradient_estimators_agree_in_expectation():
    """reparam and dreg are unbiased for L_k; stl is unbiased at k = 1 (Tucker et al. 2018)."""
    torch.manual_seed(0)
    model = VAE(8, 2, hidden=[8])
    x = torch.bernoulli(torch.full((4, 8), 0.5))
    torch.manual_seed(1)
    reparam = _mean_gradient(model, x, 5, "reparam", 40_000)
    dreg = _mean_gradient(model, x, 5, "dreg", 40_000)
    _close(reparam, dreg, 0.05)
    reparam1 = _mean_gradient(model, x, 1, "reparam", 40_000)
    stl1 = _mean_gradient(model, x, 1, "stl", 40_000)
    _close(reparam1, stl1, 0.05)


def test_estimators_give_the_same_value():
    torch.manual_seed(0)
    model = VAE(8, 2, hidden=[8])
    x = torch.bernoulli(torch.full((4, 8), 0.5))
    values = []
    for estimator in ("reparam", "stl", "dreg"):
        torch.manual_seed(2)
        values.append(iwae(model, x, k=7, estimator=estimator).value)
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(values[0], values[2])


def test_dreg_has_lower_encoder_variance_than_reparam():
    """The reason DReG exists: its encoder gradient's variance does not blow up with k."""
    torch.manual_seed(0)
    model = VAE(8, 2, hidden=[8])
    x = torch.bernoulli(torch.full((1, 8), 0.5))
    variances = {}
    for estimator in ("reparam", "dreg"):
        grads = []
        for _ in range(200):
            model.zero_grad()
            iwae(model, x, k=64, estimator=estimator).value.sum().backward()
            grads.append(model.encoder.head[0].weight.grad.flatten().clone())
        variances[estimator] = torch.stack(grads).var(0).sum().item()
    assert variances["dreg"] < variances["reparam"]


def test_bound_curve_groups_samples():
    log_w = torch.log(torch.tensor([[1.0], [3.0], [1.0], [3.0]]))
    curve = bound_curve(log_w, [1, 2, 4])
    assert curve[1].item() == pytest.approx((0 + math.log(3)) / 2)
    assert curve[2].item() == pytest.approx(math.log(2))
    assert curve[4].item() == pytest.approx(math.log(2))
    with pytest.raises(ConfigError):
        bound_curve(log_w, [8])


def test_bad_k_is_a_config_error():
    model = VAE(8, 2, hidden=[8])
    with pytest.raises(ConfigError):
        elbo(model, torch.zeros(1, 8), k=0)
    with pytest.raises(ConfigError):
        iwae(model, torch.zeros(1, 8), k=5, estimator="magic")
