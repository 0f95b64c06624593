"""fastmath: the one-exp tanh and the grouped-log Bernoulli log-likelihood equal torch's, with exact gradients."""
import math

import torch

from elbolab.distributions import BernoulliLogits
from elbolab.fastmath import bernoulli_log_prob, exp_tanh, group_size
from elbolab.nets import mlp


def _reference_log_prob(logits, x):
    # softplus as logaddexp(0, l): F.softplus returns l itself above l = 20, off by e^{-l}
    return (x * logits).sum(-1) - torch.logaddexp(torch.zeros_like(logits), logits).sum(-1)


def test_exp_tanh_equals_tanh_everywhere_and_its_gradient_is_exact():
    x = torch.cat([torch.linspace(-30, 30, 10_001), torch.tensor([0.0, -0.0, 1e-8, -1e-8, 88.0, -88.0, 1e4, -1e4])])
    assert (exp_tanh(x) - torch.tanh(x)).abs().max() <= 1.5e-7
    assert torch.isfinite(exp_tanh(x)).all()
    x64 = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(exp_tanh, (x64,))


def test_bernoulli_log_prob_equals_softplus_form_with_exact_gradients():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 784, generator=generator) * 6  # k x B x D, x broadcast over k
    x = torch.bernoulli(torch.full((3, 784), 0.3), generator=generator)
    exact = _reference_log_prob(logits.double(), x.double())
    assert (bernoulli_log_prob(logits, x).double() - exact).abs().max() < 2e-4  # float32, 784 pixels
    assert (bernoulli_log_prob(logits.double(), x.double()) - exact).abs().max() < 1e-10
    l64 = (torch.randn(2, 3, 12, dtype=torch.float64) * 5).requires_grad_()
    x64 = torch.rand(3, 12, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(bernoulli_log_prob, (l64, x64))


def test_bernoulli_log_prob_cannot_overflow_and_any_width_works():
    assert group_size(784, torch.float32) == 112  # 784 = 7 x 112, and 2^112 < float32's max
    assert group_size(797, torch.float32) == 1  # a prime width: one log per pixel, still exact
    assert group_size(784, torch.float16) <= math.log2(torch.finfo(torch.float16).max)
    for dtype in (torch.float16, torch.float32):  # logits 0: every factor is 2, the largest a group can hold
        zeros = torch.zeros(2, 784, dtype=dtype)
        assert torch.allclose(bernoulli_log_prob(zeros, zeros).float(), torch.full((2,), -784 * math.log(2)), rtol=1e-3)
    logits = torch.randn(3, 784, generator=torch.Generator().manual_seed(1)) * 4
    x = (logits > 0).float()
    half = bernoulli_log_prob(logits.bfloat16(), x.bfloat16())  # autocast's dtype: summed in float32
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, _reference_log_prob(logits.bfloat16().float(), x), rtol=0, atol=1e-3)
    extreme = torch.tensor([[1e4, -1e4, 100.0, -100.0, 0.0] + [3.0] * 792])
    x = (extreme > 0).float()
    exact = _reference_log_prob(extreme.double(), x.double())
    torch.testing.assert_close(bernoulli_log_prob(extreme, x).double(), exact, rtol=0, atol=1e-2)  # float32 at 1e4


def test_compiled_graphs_take_the_fast_formulas_and_agree_with_eager(monkeypatch):
    """Under torch.compile (only) nets.Tanh and BernoulliLogits switch to fastmath: same values and gradients."""
    import elbolab.distributions as distributions
    import elbolab.nets as nets

    used = []
    for module, name in ((nets, "exp_tanh"), (distributions, "bernoulli_log_prob")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, _real=real, _name=name: used.append(_name) or _real(*args))
    torch.manual_seed(0)
    decoder = mlp([8, 32, 32, 64])
    z, x = torch.randn(5, 8), torch.bernoulli(torch.full((5, 64), 0.4))

    def loss(z):
        return BernoulliLogits(decoder(z)).log_prob(x).sum()

    results = []
    for fn in (loss, torch.compile(loss)):
        decoder.zero_grad()
        value = fn(z)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in decoder.parameters()]))
        if fn is loss:
            assert used == []  # eager keeps torch's kernels
    assert set(used) == {"exp_tanh", "bernoulli_log_prob"}
    (eager, eager_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-4)
    for a, b in zip(fast_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
