"""Noise processes: the right amount of noise, and the clean x is never touched."""
import pytest
import torch

from elbolab.bounds import elbo
from elbolab.corruption import corrupt
from elbolab.errors import ConfigError
from elbolab.models import VAE
from elbolab.tasks import training_bound

from conftest import tiny_config


@pytest.mark.parametrize("name", ["salt_and_pepper", "dropout", "gaussian"])
def test_corruption_never_modifies_its_input(name):
    x = torch.bernoulli(torch.full((50, 30), 0.4))
    before = x.clone()
    x_in = corrupt(x, name, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert not torch.equal(x_in, x)


def test_salt_and_pepper_flips_about_half_the_hit_entries():
    x = torch.zeros(200, 500)
    x_in = corrupt(x, "salt_and_pepper", 0.4, torch.Generator().manual_seed(0))
    assert x_in.mean().item() == pytest.approx(0.2, abs=0.01)  # 40 % hit, half of them set to 1


def test_dropout_keeps_the_expectation():
    x = torch.ones(200, 500)
    x_in = corrupt(x, "dropout", 0.5, torch.Generator().manual_seed(0))
    assert (x_in == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert x_in.mean().item() == pytest.approx(1.0, abs=0.02)


def test_levels_out_of_range_are_errors():
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        corrupt(torch.zeros(2), "salt_and_pepper", 1.5)
    with pytest.raises(ConfigError, match="unknown corruption"):
        corrupt(torch.zeros(2), "blur", 0.1)


def test_denoising_bound_scores_the_clean_x():
    """Zero noise gives the plain ELBO exactly; noise changes the encoder input, never the target.

    This catches the published mistake of corrupting x in place, which trains
    a plain VAE on noisy data instead of the denoising bound.
    """
    torch.manual_seed(0)
    model = VAE(30, 3, hidden=[16])
    x = torch.bernoulli(torch.full((8, 30), 0.4))
    clean = x.clone()
    bound = lambda *o: training_bound(model, x, None, tiny_config(*o).bound, step=0)  # noqa: E731
    torch.manual_seed(1)
    plain = bound()
    torch.manual_seed(1)
    zero = bound("bound.corruption='salt_and_pepper'", "bound.corruption_level=0.0")
    assert torch.equal(plain.value, zero.value)

    torch.manual_seed(1)
    noisy = bound("bound.corruption='salt_and_pepper'", "bound.corruption_level=0.5")
    assert torch.equal(x, clean)
    torch.manual_seed(1)
    x_tilde = corrupt(x, "salt_and_pepper", 0.5)
    torch.testing.assert_close(noisy.value, elbo(model, x, x_in=x_tilde).value)
    torch.manual_seed(1)
    x_tilde = corrupt(x, "salt_and_pepper", 0.5)
    in_place_mistake = elbo(model, x_tilde, x_in=x_tilde)
    assert not torch.allclose(noisy.reconstruction, in_place_mistake.reconstruction)
