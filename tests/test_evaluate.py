"""Evaluation: active units, the eval.json of a real run, chunking does not change the numbers."""
import json

import pytest
import torch

from elbolab.evaluate import active_units, dissect, evaluate, mean_and_se
from elbolab.models import LinearGaussian, VAE
from elbolab.train import train

from conftest import tiny_config


def test_active_units_catch_a_collapsed_dimension():
    torch.manual_seed(0)
    model = VAE(16, 4, hidden=[12])
    with torch.no_grad():  # dimension 2 of the posterior mean ignores x: a collapsed unit
        model.encoder.head[0].weight[2].zero_()
        model.encoder.head[0].bias[2] = 0.3
    x = torch.bernoulli(torch.full((500, 16), 0.5))
    means = model.posterior(x).mean
    count, cov = active_units(means, threshold=0.01)
    assert cov[2] < 1e-10
    assert count == int((cov > 0.01).sum())
    assert cov[[0, 1, 3]].min() > 0.01 and count == 3


def test_mean_and_se_by_hand():
    stat = mean_and_se(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert stat["mean"] == pytest.approx(3.0)
    assert stat["se"] == pytest.approx(torch.tensor([1.0, 2.0, 3.0, 6.0]).std().item() / 2)


def test_dissect_chunking_does_not_change_the_estimate():
    torch.manual_seed(0)
    model = LinearGaussian(5, 2)
    x = torch.randn(12, 5)
    whole = dissect(model, [(x, None)], ks=[1, 10, 1000], k_chunk=100, seed=3)
    chunked = dissect(model, [(x[:5], None), (x[5:], None)], ks=[1, 10, 1000], k_chunk=100, seed=3)
    exact = model.exact_log_marginal(x).mean().item()
    assert whole["n_examples"] == chunked["n_examples"] == 12
    # k = 1000: seeds 0-3 put both estimates within 0.017 nats of the exact value
    assert abs(whole["log_likelihood"]["mean"] - exact) < 0.05
    assert abs(chunked["log_likelihood"]["mean"] - exact) < 0.05
    assert whole["gap"]["mean"] >= 0.0
    assert len(whole["kl_per_dim"]) == 2
    assert sum(whole["kl_per_dim"]) == pytest.approx(whole["kl"]["mean"], rel=1e-5)


def test_evaluate_writes_every_term(tmp_path):
    run = train(tiny_config("train.epochs=2"), tmp_path / "run", progress=False)
    result = evaluate(run, ks=[1, 5, 50], n_images=40, k_chunk=20, batch_size=16, progress=False)
    stored = json.loads((run / "eval.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["n_examples"] == 40
    assert set(stored["bound_curve"]) == {"1", "5", "50"}
    curve = [stored["bound_curve"][k]["mean"] for k in ("1", "5", "50")]
    assert curve[0] < curve[1] < curve[2]
    assert stored["log_likelihood"]["k"] == 50
    assert stored["elbo"]["mean"] == pytest.approx(stored["reconstruction"]["mean"] - stored["kl"]["mean"], abs=1e-6)
    assert stored["gap"]["mean"] > 0
    assert len(stored["active_units"]["cov"]) == 8 and stored["active_units"]["threshold"] == 0.01
