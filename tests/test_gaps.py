"""Inference gaps: checked against a linear-Gaussian model whose log p(x) and posterior are exact."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal
from typer.testing import CliRunner

from elbolab import evaluate, train
from elbolab.cli import app
from elbolab.gaps import LocalOptimization, UnsupportedModelError, inference_gaps
from elbolab.models import LinearGaussian

from conftest import tiny_config

SCHEMA = {
    "n_examples", "elbo_amortized", "elbo_optimized", "log_likelihood", "approximation_gap", "amortization_gap",
    "optimizer", "seconds",
}
# Few points and samples keep the tests fast; lr 0.02 reaches the optimum in a few hundred steps here.
FAST = dict(k=1000, elbo_samples=500, optimization=LocalOptimization(lr=0.02, max_steps=3000, window=50))
TOL = 0.05  # nats: optimization noise ball + Monte-Carlo error of the 500-sample ELBO means over 32 points


def orthogonal_model(data_dim: int = 8, latent_dim: int = 3, sigma: float = 0.5) -> LinearGaussian:
    """A linear-Gaussian model with orthogonal columns of W: the exact posterior is a diagonal Gaussian."""
    torch.manual_seed(0)
    model = LinearGaussian(data_dim, latent_dim, sigma=sigma)
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim))
        model.W.copy_(q * torch.tensor([2.0, 1.0, 0.5]))
        model.b.copy_(0.3 * torch.randn(data_dim))
    model.set_exact_encoder()
    return model


def marginal_samples(model: LinearGaussian, n: int) -> torch.Tensor:
    cov = model.W @ model.W.T + model.log_sigma.exp() ** 2 * torch.eye(model.data_dim)
    return MultivariateNormal(model.b, covariance_matrix=cov).sample((n,)).detach()


def test_exact_encoder_has_no_gaps():
    model = orthogonal_model()
    x = marginal_samples(model, 32)
    exact = model.exact_log_marginal(x).double().mean().item()
    gaps = inference_gaps(model, x, batch_size=16, **FAST)  # two batches of points
    summary = gaps.summary()
    assert set(summary) == SCHEMA and summary["n_examples"] == 32
    assert summary["log_likelihood"]["mean"] == pytest.approx(exact, abs=0.01)
    assert summary["elbo_amortized"]["mean"] == pytest.approx(exact, abs=TOL)
    assert summary["elbo_optimized"]["mean"] == pytest.approx(exact, abs=TOL)
    assert abs(summary["approximation_gap"]["mean"]) < TOL
    assert abs(summary["amortization_gap"]["mean"]) < TOL
    assert summary["optimizer"]["converged"] and summary["optimizer"]["steps"] < 3000


def test_crippled_encoder_shows_an_amortization_gap_that_local_optimization_closes():
    model = orthogonal_model()
    with torch.no_grad():  # posterior means shrunk toward 0, scales too wide
        model.encoder.weight.mul_(0.1)
        model.encoder.bias.mul_(0.1)
        model.log_scale.add_(1.0)
    x = marginal_samples(model, 32)
    exact = model.exact_log_marginal(x).double()
    decoder_before = model.W.detach().clone()
    gaps = inference_gaps(model, x, **FAST)
    assert gaps.amortization_gap.mean() > 5.0  # nats
    assert (gaps.amortization_gap > 0.5).all()
    assert abs(gaps.approximation_gap.mean()) < TOL
    assert (gaps.elbo_optimized - exact).mean().abs() < TOL  # the local optimization reaches log p(x)
    assert (gaps.log_likelihood - exact).mean().abs() < 0.02
    assert torch.equal(model.W, decoder_before) and model.W.requires_grad  # decoder frozen, then restored


class ShiftedPrior(LinearGaussian):
    """A conditional model: p(z | c) = N(c, I), so x | c ~ N(W c + b, W W^T + sigma^2 I); its encoder ignores c."""

    def prior(self, c=None):
        return Independent(Normal(c, torch.ones_like(c)), 1)

    def exact_log_marginal_given(self, x, c):
        return self.exact_log_marginal(x - c @ self.W.T)


def test_condition_is_passed_through():
    base = orthogonal_model()
    model = ShiftedPrior(base.data_dim, base.latent_dim, sigma=0.5)
    model.load_state_dict(base.state_dict())
    torch.manual_seed(1)
    c = 2.0 * torch.randn(32, base.latent_dim)
    x = marginal_samples(model, 32) + c @ model.W.detach().T
    exact = model.exact_log_marginal_given(x, c).double()
    gaps = inference_gaps(model, x, c, batch_size=16, **FAST)
    assert gaps.amortization_gap.mean() > 0.5  # the encoder does not know c
    assert (gaps.elbo_optimized - exact).mean().abs() < TOL
    assert (gaps.log_likelihood - exact).mean().abs() < 0.02


class FullCovariance(LinearGaussian):
    def posterior(self, x, c=None):
        return MultivariateNormal(self.encoder(x), scale_tril=torch.eye(self.latent_dim).expand(x.shape[0], -1, -1))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # the latent_dim = 0 model
def test_unsupported_models_get_a_clear_error():
    model = FullCovariance(4, 2)
    with pytest.raises(UnsupportedModelError, match="MultivariateNormal, not a factorised Gaussian"):
        inference_gaps(model, torch.randn(5, 4), k=10, elbo_samples=10, elbo_chunk=10)
    with pytest.raises(UnsupportedModelError, match="not a latent variable model"):
        inference_gaps(nn.Linear(4, 4), torch.randn(5, 4))
    with pytest.raises(UnsupportedModelError, match="has no latent variable"):
        inference_gaps(LinearGaussian(4, latent_dim=0), torch.randn(5, 4))


def test_same_seed_same_numbers():
    model = orthogonal_model()
    x = marginal_samples(model, 8)
    settings = dict(k=50, elbo_samples=50, elbo_chunk=10, optimization=LocalOptimization(lr=0.02, max_steps=100, window=20))
    first, second = inference_gaps(model, x, seed=3, **settings), inference_gaps(model, x, seed=3, **settings)
    assert torch.equal(first.elbo_optimized, second.elbo_optimized)
    assert torch.equal(first.log_likelihood, second.log_likelihood)


def test_cli_writes_eval_json_and_keeps_other_keys(tmp_path):
    runner = CliRunner()
    run = train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    args = ["analyze", "gaps", str(run), "--n-points", "12", "--steps", "200", "--lr", "0.01", "--k", "100",
            "--elbo-samples", "100"]
    fresh = runner.invoke(app, args)  # a run without eval.json gets one with just this key
    assert fresh.exit_code == 0, fresh.output
    assert "amortization gap" in fresh.output
    assert set(json.loads((run / "eval.json").read_text())) == {"inference_gaps"}

    evaluate(run, ks=[1, 5], n_images=10, k_chunk=5, batch_size=10, progress=False)
    stored = json.loads((run / "eval.json").read_text())
    assert "inference_gaps" in stored and "elbo" in stored  # evaluate kept the entry it does not produce
    stored["user_note"] = "kept"
    (run / "eval.json").write_text(json.dumps(stored))
    again = runner.invoke(app, [*args, "--seed", "1"])
    assert again.exit_code == 0, again.output
    final = json.loads((run / "eval.json").read_text())
    assert final["user_note"] == "kept" and final["elbo"] == stored["elbo"]
    gaps = final["inference_gaps"]
    assert set(gaps) == SCHEMA and gaps["n_examples"] == 12 and gaps["log_likelihood"]["k"] == 100
    assert gaps["optimizer"]["seed"] == 1 and gaps["optimizer"]["steps"] <= 200
    assert gaps["approximation_gap"]["mean"] + gaps["amortization_gap"]["mean"] == pytest.approx(
        gaps["log_likelihood"]["mean"] - gaps["elbo_amortized"]["mean"], abs=1e-9
    )


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "gaps", str(tmp_path)])
    assert result.exit_code == 1 and "is not a run directory" in result.output
    run = train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    (run / "eval.json").write_text("{not json")
    damaged = runner.invoke(app, ["analyze", "gaps", str(run), "--n-points", "4"])
    assert damaged.exit_code == 1 and "not valid JSON" in damaged.output
    assert (run / "eval.json").read_text() == "{not json"  # nothing the user had is lost
