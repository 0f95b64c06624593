"""Hand-written densities equal torch's; heads produce the right shapes."""
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Multinomial

from elbolab.distributions import (
    BernoulliLogits,
    CategoricalHead,
    GaussianHead,
    MultinomialLogits,
    detach_parameters,
    diagonal_gaussian,
    make_likelihood,
)
from elbolab.errors import ConfigError


def test_bernoulli_logits_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 20) * 5
    x = torch.bernoulli(torch.full((4, 20), 0.3))
    ours = BernoulliLogits(logits).log_prob(x)
    ref = Independent(Bernoulli(logits=logits), 1).log_prob(x)
    assert ours.shape == (3, 4)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)


def test_bernoulli_logits_stable_at_extreme_logits():
    logits = torch.tensor([[-200.0, 200.0, 0.0]])
    x = torch.tensor([[0.0, 1.0, 1.0]])
    value = BernoulliLogits(logits).log_prob(x)
    torch.testing.assert_close(value, torch.tensor([-torch.log(torch.tensor(2.0))]))


def test_multinomial_logits_matches_torch_for_each_total():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    x = torch.tensor([[0, 2, 0, 1, 0, 0, 3], [1, 0, 0, 0, 0, 0, 0], [2, 2, 2, 0, 0, 1, 0],
                      [0, 0, 0, 0, 0, 0, 9], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    ours = MultinomialLogits(logits).log_prob(x)
    for i in range(5):
        ref = Multinomial(int(x[i].sum()), logits=logits[i]).log_prob(x[i])
        torch.testing.assert_close(ours[i], ref, rtol=1e-5, atol=1e-5)


def test_gaussian_head_fixed_and_learned_sigma():
    fixed = GaussianHead(6, sigma=0.5)
    learned = GaussianHead(6, sigma=0.5, learn_sigma=True)
    assert not any(p.requires_grad for p in fixed.parameters())
    assert sum(p.numel() for p in learned.parameters()) == 6
    mean = torch.zeros(2, 6)
    x = torch.ones(2, 6)
    expected = torch.distributions.Normal(0.0, 0.5).log_prob(torch.tensor(1.0)) * 6
    torch.testing.assert_close(fixed(mean).log_prob(x), expected.expand(2))
    with pytest.raises(ConfigError):
        GaussianHead(3, sigma=0.0)


def test_categorical_head_shapes():
    head = CategoricalHead(4, num_classes=3)
    assert head.out_features == 12
    dist = head(torch.randn(5, 2, 12))
    x = torch.randint(0, 3, (2, 4))
    assert dist.log_prob(x).shape == (5, 2)


def test_unknown_likelihood_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown likelihood"):
        make_likelihood("poisson", 3)


def test_detach_parameters_cuts_the_graph():
    loc = torch.zeros(2, 3, requires_grad=True)
    q = detach_parameters(diagonal_gaussian(loc, torch.ones(2, 3)))
    assert not q.base_dist.loc.requires_grad


def test_gaussian_kl_is_torchs_closed_form():
    """The hand-written diagonal-Gaussian KL gives torch's numbers, and None for pairs it does not cover."""
    from torch.distributions import Independent, Normal, kl_divergence

    from elbolab.distributions import diagonal_gaussian, gaussian_kl

    g = torch.Generator().manual_seed(0)
    q = diagonal_gaussian(torch.randn(7, 5, generator=g), torch.rand(7, 5, generator=g) + 0.1)
    p = diagonal_gaussian(torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.1)
    assert torch.equal(gaussian_kl(q, p), kl_divergence(q, p))
    q2 = Independent(Normal(torch.randn(3, 4, 5, generator=g), torch.rand(3, 4, 5, generator=g) + 0.1), 2)
    p2 = Independent(Normal(torch.zeros(3, 4, 5), torch.ones(3, 4, 5)), 2)
    torch.testing.assert_close(gaussian_kl(q2, p2), kl_divergence(q2, p2))
    assert gaussian_kl(q2, p) is None  # different event dims: torch has no closed form either
    assert gaussian_kl(q, torch.distributions.Laplace(0.0, 1.0)) is None
