"""Sparse click rows (issue 3): the gather-sum first layer, the one-allocation multinomial term, Liang et al.'s
normalise-then-dropout input, old checkpoints (nn.Linear first layer) loading and resuming, RecVAE's phase freezing."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from elbolab.config import load_preset
from elbolab.models import build_model
from elbolab.recommendation import RecommendationTask, _frozen_outside
from elbolab.sparse import SparseLinear, dropout_values, l2_normalize_rows, multinomial_log_prob, to_torch_csr
from elbolab.train import Phase


def _clicks(rows=6, items=30, density=0.2, seed=0):
    x = sp.random(rows, items, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = np.random.default_rng(seed).integers(1, 4, x.nnz)  # counts, not only 1s
    x = sp.csr_matrix(x.multiply(np.arange(rows)[:, None] != 2), dtype=np.float32)  # row 2 empty
    x.eliminate_zeros()
    return to_torch_csr(x), torch.from_numpy(x.toarray())


def test_sparse_linear_matches_nn_linear_and_its_gradient_touches_only_clicked_rows():
    torch.manual_seed(0)
    linear = nn.Linear(30, 5)
    layer = SparseLinear.from_linear(linear)
    sparse, dense = _clicks()
    g = torch.randn(6, 5)
    linear(dense).backward(g)
    layer(sparse).backward(g)
    assert torch.allclose(layer(sparse), linear(dense), atol=1e-5)
    assert torch.allclose(layer(dense), linear(dense), atol=1e-5)
    assert torch.allclose(layer.weight.grad, linear.weight.grad.t(), atol=1e-5)
    assert torch.allclose(layer.bias.grad, linear.bias.grad, atol=1e-5)
    unclicked = dense.sum(0) == 0
    assert unclicked.any() and (layer.weight.grad[unclicked] == 0).all()


def test_sparse_linear_loads_an_nn_linear_state_dict_and_its_own():
    torch.manual_seed(0)
    old = nn.Sequential(nn.Linear(30, 5))  # the layout of checkpoints written before SparseLinear
    new = nn.Sequential(SparseLinear(30, 5))
    new.load_state_dict(old.state_dict())
    assert torch.equal(new[0].weight, old[0].weight.t())
    again = nn.Sequential(SparseLinear(30, 5))
    again.load_state_dict(new.state_dict())
    assert torch.equal(again[0].weight, new[0].weight)
    square_old, square_new = nn.Sequential(nn.Linear(5, 5)), nn.Sequential(SparseLinear(5, 5))
    square_new.load_state_dict(square_old.state_dict())  # square: the state dict's version decides
    assert torch.equal(square_new[0].weight, square_old[0].weight.t())
    kept = nn.Sequential(SparseLinear(5, 5))
    kept.load_state_dict(square_new.state_dict())
    assert torch.equal(kept[0].weight, square_new[0].weight)


def test_multinomial_click_term_matches_log_softmax_in_value_and_gradient():
    sparse, dense = _clicks()
    logits = torch.randn(3, 6, 30, dtype=torch.float64)  # [k, B, I]
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    n = dense.double().sum(-1)
    reference = (torch.log_softmax(a, -1) * dense.double()).sum(-1) + torch.lgamma(n + 1) - torch.lgamma(dense.double() + 1).sum(-1)
    value = multinomial_log_prob(b, to_torch_csr(sp.csr_matrix(dense.numpy().astype(np.float64))))
    weights = torch.randn(3, 6, dtype=torch.float64)
    (reference * weights).sum().backward()
    (value * weights).sum().backward()
    assert torch.allclose(value, reference) and torch.allclose(b.grad, a.grad)
    assert torch.autograd.gradcheck(lambda t: multinomial_log_prob(t, to_torch_csr(sp.csr_matrix(dense.numpy().astype(np.float64)))),
                                    (torch.randn(6, 30, dtype=torch.float64, requires_grad=True),))


def test_multinomial_click_term_keeps_float32_precision_for_widely_spread_logits():
    # lse = max(logits) - log max(softmax) must equal logsumexp where a naive exp would overflow or underflow
    sparse, dense = _clicks()
    logits = torch.randn(6, 30) * 40 + torch.linspace(-80, 80, 6)[:, None]  # rows far apart, spread 100+ nats
    reference = (torch.log_softmax(logits.double(), -1) * dense.double()).sum(-1)
    n = dense.double().sum(-1)
    value = multinomial_log_prob(logits, sparse).double() - torch.lgamma(n + 1) + torch.lgamma(dense.double() + 1).sum(-1)
    assert torch.allclose(value, reference, rtol=1e-5, atol=1e-3)


def test_encoder_input_is_normalised_by_the_clean_norm_then_dropped_out():
    # Liang et al.'s and Shenbin et al.'s code: h = dropout(x / ||x||), not x~ / ||x~|| of the dropped-out x~.
    sparse, dense = _clicks()
    torch.manual_seed(3)
    dropped = dropout_values(sparse, 0.5)
    keep = dropped.values() != 0
    expected = sparse.values() / dense.norm(dim=-1).clamp_min(1e-12)[dense.nonzero()[:, 0]] * keep / 0.5
    assert torch.allclose(l2_normalize_rows(dropped, norms_of=sparse).values(), expected)
    dense_dropped = dropped.to_dense()
    assert torch.allclose(l2_normalize_rows(dense_dropped, norms_of=dense), l2_normalize_rows(dropped, norms_of=sparse).to_dense())
    assert torch.allclose(l2_normalize_rows(dense), torch.nn.functional.normalize(dense, dim=-1))


def test_old_optimizer_state_of_the_first_layer_resumes_transposed(tmp_path):
    config = load_preset("mult-vae-ml100k")
    config.model.hidden, config.model.latent_dim = [8], 4
    sparse, _ = _clicks()
    task = RecommendationTask.__new__(RecommendationTask)
    task.config = config
    model = build_model("mult-vae", data_dim=30, latent_dim=4, hidden=[8])
    opt = task.optimizers(model)["all"]
    model.log_weights(sparse, sparse).log_w.sum().neg().backward()
    opt.step()
    saved = opt.state_dict()
    first = model.encoder.trunk[0].weight
    index = [i for i, p in enumerate(opt.param_groups[0]["params"]) if p is first][0]
    old = {**saved, "state": {i: dict(s) for i, s in saved["state"].items()}}
    for key in ("exp_avg", "exp_avg_sq"):
        old["state"][index][key] = saved["state"][index][key].t().clone()  # as an nn.Linear first layer kept them
    fresh = task.optimizers(model)["all"]
    fresh.load_state_dict(old)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(fresh.state[first][key], opt.state[first][key])


@pytest.mark.parametrize("phase", ["encoder", "decoder"])
def test_recvae_phase_computes_only_the_gradients_its_optimizer_steps(phase):
    torch.manual_seed(0)
    model = build_model("recvae", data_dim=30, latent_dim=4, hidden=8, n_layers=2)
    sparse, _ = _clicks()
    stepped, frozen = (model.encoder, model.decoder) if phase == "encoder" else (model.decoder, model.encoder)

    def grads(freeze):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with _frozen_outside(model, Phase(phase, phase, 1)) if freeze else torch.enable_grad():
            loss = -model.log_weights(sparse, sparse).log_w.mean()
        loss.backward()
        return [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    full, lean = grads(False), grads(True)
    assert all(p.requires_grad for p in model.parameters())  # restored after the loss's graph is built
    ids = {id(p) for p in stepped.parameters()}
    for p, a, b in zip(model.parameters(), full, lean):
        if id(p) in ids:
            assert torch.allclose(a, b, atol=1e-6)
        else:
            assert b is None
    assert any(p.grad is None for p in frozen.parameters())
