"""VAEAC (issue 5): the tabular likelihood, the prior network and its regulariser, the model, the task, the metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from elbolab import evaluate, train
from elbolab.bounds import elbo
from elbolab.config import apply_overrides, load_preset
from elbolab.distributions import TabularHead, one_hot_columns
from elbolab.imputation import TabularTask, imputation_metrics, nrmse, pfc, point_imputation
from elbolab.models import build_model
from elbolab.models.vaeac import make_condition
from elbolab.priors import SkipPriorNetwork, prior_network_regulariser
from elbolab.runs import BEST, read_metrics

NAN = float("nan")


def test_one_hot_columns_layout():
    x = torch.tensor([[0.5, 2.0, -1.0], [NAN, NAN, 3.0]])
    out = one_hot_columns(x, [0, 3, 0])
    assert out.tolist() == [[0.5, 0, 0, 1, -1.0], [0, 0, 0, 0, 3.0]]


def test_tabular_log_prob_counts_only_hidden_observed_entries():
    torch.manual_seed(0)
    head = TabularHead(3, [0, 3, 0], learn_sigma=False, sigma=0.5)
    params = torch.randn(2, head.out_features)  # [B, 2 reals + 3 logits]
    x = torch.tensor([[0.3, 1.0, -2.0], [1.0, 2.0, NAN]])
    score = torch.tensor([[True, True, False], [False, True, True]])
    got = head(params, score=score).log_prob(x)
    loc, logits = params[:, :2], params[:, 2:]
    want0 = Normal(loc[0, 0], 0.5).log_prob(torch.tensor(0.3)) + Categorical(logits=logits[0]).log_prob(torch.tensor(1))
    want1 = Categorical(logits=logits[1]).log_prob(torch.tensor(2))  # column 2 is hidden but missing: not scored
    torch.testing.assert_close(got, torch.stack([want0, want1]))


def test_tabular_head_learned_sigma_and_mode():
    head = TabularHead(2, [0, 2], learn_sigma=True)
    params = torch.tensor([[1.5, 0.0, -3.0, 2.0]])  # mean, raw sigma, two logits
    dist = head(params)
    torch.testing.assert_close(dist.scale, torch.nn.functional.softplus(torch.tensor([[0.0]])) + 1e-2)
    assert dist.mode.tolist() == [[1.5, 1.0]]
    assert dist.sample((5,)).shape == (5, 1, 2)


def test_prior_network_skips_and_regulariser():
    net = SkipPriorNetwork(6, [5, 4], latent_dim=3)
    p, skips = net.features(torch.randn(2, 6))
    assert [s.shape[-1] for s in skips] == [6, 5, 4] and p.event_shape == (3,)
    mu, sigma = p.mean, p.stddev
    want = -(mu**2).sum(-1) / (2 * 1e8) + 1e-4 * (sigma.log() - sigma).sum(-1)
    torch.testing.assert_close(prior_network_regulariser(p, 1e4, 1e-4), want)


def test_likelihood_depends_on_given_part_and_ignores_hidden_values():
    torch.manual_seed(0)
    model = build_model("vaeac", column_sizes=[0, 0, 3], latent_dim=2, hidden=[8])
    x = torch.tensor([[0.5, -1.0, 2.0]])
    given = torch.tensor([[True, False, False]])
    z = torch.randn(1, 1, 2)
    a = model.likelihood(z, make_condition(x, given)).mode
    b = model.likelihood(z, make_condition(x.clone().index_fill_(1, torch.tensor([1, 2]), 9.0), given)).mode
    c = model.likelihood(z, make_condition(x + 1.0, given)).mode
    torch.testing.assert_close(a, b)  # hidden entries' values never reach the prior/generative path
    assert not torch.allclose(a, c)  # the given entry does


def test_impute_keeps_given_entries_and_fills_the_rest():
    torch.manual_seed(0)
    model = build_model("vaeac", column_sizes=[0, 2], latent_dim=2, hidden=[8])
    x = torch.tensor([[1.0, NAN], [NAN, 1.0]])
    draws = model.impute(x, ~torch.isnan(x), n=4)
    assert draws.shape == (4, 2, 2) and torch.isfinite(draws).all()
    assert (draws[:, 0, 0] == 1.0).all() and (draws[:, 1, 1] == 1.0).all()
    assert set(draws[:, 0, 1].tolist()) <= {0.0, 1.0}


def test_point_imputation_mean_and_majority():
    draws = torch.tensor([[[1.0, 0.0]], [[2.0, 2.0]], [[6.0, 2.0]]])  # [n=3, B=1, D=2]
    assert point_imputation(draws, [0, 3]).tolist() == [[3.0, 2.0]]


def test_metrics_by_hand():
    truth = np.array([[1.0, 0], [3.0, 1], [5.0, 2], [7.0, 1]])
    imputed = np.array([[1.0, 0], [4.0, 2], [5.0, 2], [5.0, 1]])
    hidden = np.array([[False, False], [True, True], [False, True], [True, False]])
    std = np.std([1.0, 3, 5, 7])
    assert nrmse(truth, imputed, hidden, [0, 3]) == pytest.approx(math.sqrt((1 + 4) / 2) / std)
    assert pfc(truth, imputed, hidden, [0, 3]) == pytest.approx(0.5)
    assert math.isnan(imputation_metrics(truth, imputed, hidden, [0, 0])["pfc"])


def vaeac_config(*overrides):
    return apply_overrides(load_preset("vaeac-breast-cancer"), ["train.epochs=3", "model.hidden=[16]",
                                                                 "model.latent_dim=4", *overrides])


def test_training_bound_is_the_elbo_plus_the_regulariser():
    config = vaeac_config()
    task = TabularTask(config)
    model = task.build_model()
    batch = next(task.batches(torch.Generator().manual_seed(0)))
    torch.manual_seed(1)
    terms = task.loss(model, batch, step=0)
    torch.manual_seed(1)
    plain = elbo(model, *batch)
    reg = prior_network_regulariser(model.prior(batch[1]))
    torch.testing.assert_close(terms.value, plain.value + reg)
    hidden = batch[1][:, 30:] == 0
    assert 0.1 < hidden.float().mean() < 0.3  # MCAR p = 0.2 (the table has no missing cells)


def test_vaeac_learns_a_correlated_table_better_than_the_mean():
    # x2 = 2 x1 + small noise; a category tied to the sign of x1: hide half, VAEAC must use the rest.
    import pandas as pd

    from elbolab import VAEACImputer

    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    frame = pd.DataFrame({"x1": a, "x2": 2 * a + 0.1 * rng.normal(size=400), "sign": np.where(a > 0, "pos", "neg")})
    hidden = rng.random(frame.shape) < 0.3
    imputer = VAEACImputer(epochs=25, hidden=[32, 32], latent_dim=4, lr=3e-3, seed=0).fit(frame.mask(hidden))
    out = imputer.transform(frame.mask(hidden))
    truth = frame[["x1", "x2"]].to_numpy()
    assert nrmse(truth, out[["x1", "x2"]].to_numpy(), hidden[:, :2], [0, 0]) < 0.6  # the mean scores ~1
    assert (out["sign"][hidden[:, 2]] != frame["sign"][hidden[:, 2]]).mean() < 0.25  # the mode errs ~0.5


def test_train_keeps_best_validation_iwae_and_evaluate_reports_nrmse(tmp_path):
    run = train(vaeac_config(), tmp_path / "run", progress=False)
    records = read_metrics(run)
    assert len(records) == 3 and all(math.isfinite(r["valid_iwae"]) for r in records)
    assert (run / BEST).is_file()
    result = evaluate(run, ks=[1, 5], n_images=40, progress=False)
    metrics = result["task_metrics"]
    assert 0 < metrics["nrmse"] < 2 and math.isnan(metrics["pfc"]) and metrics["test_mask_level"] == 0.5
    assert result["n_examples"] == 40 and math.isfinite(result["log_likelihood"]["mean"])
