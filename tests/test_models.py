"""One conformance suite over every model in the family (DESIGN.md sec. 4).

Each case is a tiny config; the same properties hold for all of them:
log_weights has shape [k, B] and is finite, gradients reach encoder and
decoder, a checkpoint round-trips, the same seed gives the same numbers.
"""
import pytest
import torch

from elbolab.models import MODELS, build_model

# name -> (constructor kwargs, a function making a batch x of 4 examples)
MODEL_CASES = {
    "vae-bernoulli": ("vae", dict(data_dim=12, latent_dim=3, hidden=[10]), lambda: torch.bernoulli(torch.full((4, 12), 0.5))),
    "vae-gaussian-learned-sigma": (
        "vae",
        dict(data_dim=12, latent_dim=3, hidden=[10, 10], likelihood="gaussian", likelihood_options={"learn_sigma": True}),
        lambda: torch.randn(4, 12),
    ),
    "vae-multinomial": (
        "vae",
        dict(data_dim=12, latent_dim=3, hidden=[10], likelihood="multinomial"),
        lambda: torch.poisson(torch.full((4, 12), 1.0)),
    ),
    "vae-categorical": (
        "vae",
        dict(data_dim=5, latent_dim=2, hidden=[10], likelihood="categorical", likelihood_options={"num_classes": 3}),
        lambda: torch.randint(0, 3, (4, 5)),
    ),
    "linear-gaussian": ("linear-gaussian", dict(data_dim=6, latent_dim=2), lambda: torch.randn(4, 6)),
    # conditional VAE (issue 4): make_x returns (x, c) for conditional models
    "cvae": (
        "cvae",
        dict(data_dim=12, cond_dim=4, latent_dim=3, hidden=[10]),
        lambda: (torch.bernoulli(torch.full((4, 12), 0.5)), torch.bernoulli(torch.full((4, 4), 0.5))),
    ),
    "conditional-nn": (
        "conditional-nn",
        dict(data_dim=12, cond_dim=4, hidden=[10]),
        lambda: (torch.bernoulli(torch.full((4, 12), 0.5)), torch.bernoulli(torch.full((4, 4), 0.5))),
    ),
    # imputation (issue 5): two real columns and a 3-way categorical; NaN = missing in the data
    "vaeac-tabular": (
        "vaeac",
        dict(column_sizes=[0, 3, 0], latent_dim=2, hidden=[8, 8]),
        lambda: torch.tensor([[0.5, 2.0, -1.0], [float("nan"), 0.0, 1.0], [1.5, 1.0, float("nan")], [0.0, float("nan"), 2.0]]),
    ),
    # collaborative filtering (issue 3): click vectors
    "mult-vae": ("mult-vae", dict(data_dim=12, latent_dim=3, hidden=[10]), lambda: torch.bernoulli(torch.full((4, 12), 0.4))),
    "mult-dae": ("mult-dae", dict(data_dim=12, latent_dim=3), lambda: torch.bernoulli(torch.full((4, 12), 0.4))),
    "recvae": ("recvae", dict(data_dim=12, latent_dim=3, hidden=10, n_layers=3), lambda: torch.bernoulli(torch.full((4, 12), 0.4))),
}


def split_case(batch):
    """(x, c) of a case's batch: c is None for unconditional models (issue 4)."""
    return batch if isinstance(batch, tuple) else (batch, None)


def test_every_registered_model_has_a_case():
    assert {name for name, _, _ in MODEL_CASES.values()} == set(MODELS)


def build_case(key, seed=0):
    name, kwargs, make_x = MODEL_CASES[key]
    torch.manual_seed(seed)
    return build_model(name, **kwargs), make_x()


@pytest.fixture(params=sorted(MODEL_CASES))
def key(request):
    return request.param


@pytest.fixture
def case(key):
    return build_case(key)


def encoder_x(x):
    # Categorical data arrive as labels; the encoder sees them as numbers.
    return x.float()


def test_log_weights_shape_and_finite(case):
    model, (x, c) = case[0], split_case(case[1])
    lw = model.log_weights(x if x.dtype != torch.int64 else x, c, k=7, x_in=encoder_x(x))
    assert lw.log_w.shape == (7, 4)
    assert lw.z.shape == (7, 4, model.latent_dim)
    assert torch.isfinite(lw.log_w).all()


def test_gradients_reach_every_parameter(case):
    model, (x, c) = case[0], split_case(case[1])
    lw = model.log_weights(x, c, k=3, x_in=encoder_x(x))
    lw.log_w.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_checkpoint_round_trip(case, tmp_path):
    model, (x, c) = case[0], split_case(case[1])
    torch.save({"spec": model.spec, "state": model.state_dict()}, tmp_path / "m.pt")
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    clone = build_model(saved["spec"]["name"], **saved["spec"]["kwargs"])
    clone.load_state_dict(saved["state"])
    torch.manual_seed(3)
    a = model.log_weights(x, c, k=2, x_in=encoder_x(x)).log_w
    torch.manual_seed(3)
    b = clone.log_weights(x, c, k=2, x_in=encoder_x(x)).log_w
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_same_seed_same_numbers(key):
    (a, x), (b, _) = build_case(key, seed=11), build_case(key, seed=11)
    x, c = split_case(x)
    torch.manual_seed(4)
    la = a.log_weights(x, c, k=2, x_in=encoder_x(x)).log_w
    torch.manual_seed(4)
    lb = b.log_weights(x, c, k=2, x_in=encoder_x(x)).log_w
    assert torch.equal(la, lb)


def test_sample_has_the_data_shape(case):
    model, (_, c) = case[0], split_case(case[1])
    samples = model.sample(5, c)
    assert samples.shape[0] == 5
