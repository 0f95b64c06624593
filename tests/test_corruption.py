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


# --------------------------------------------------------------------------- denoising bound through the task (issue 4)


class _Recorder:
    """Wraps p(x | z) and keeps every target its log_prob was asked to score."""

    def __init__(self, dist, seen):
        self.dist, self.seen = dist, seen

    def log_prob(self, x):
        self.seen.append(x.detach().clone())
        return self.dist.log_prob(x)

    def __getattr__(self, name):
        return getattr(self.dist, name)


class SpyVAE(VAE):
    """A VAE that records what its encoder sees and what its likelihood scores."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_inputs, self.targets = [], []

    def posterior(self, x, c=None):
        self.encoder_inputs.append(x.detach().clone())
        return super().posterior(x, c)

    def likelihood(self, z, c=None):
        return _Recorder(super().likelihood(z, c), self.targets)


@pytest.mark.parametrize("bound", [["bound.name='elbo'"], ["bound.name='iwae'", "bound.k=4"]])
def test_the_task_corrupts_the_encoder_input_and_scores_the_clean_batch(bound):
    """Through ImageTask.loss (the trainer's path): x~ != x goes to the encoder, the untouched x is scored."""
    from elbolab.tasks import make_task

    config = tiny_config(*bound, "bound.corruption='salt_and_pepper'", "bound.corruption_level=0.3")
    task = make_task(config)
    model = SpyVAE(task.data_dim, 3, hidden=[16])
    x, c = next(task.batches(torch.Generator().manual_seed(0)))
    clean = x.clone()
    task.loss(model, (x, c), step=0)
    (seen,), (target,) = model.encoder_inputs, model.targets
    assert torch.equal(x, clean) and torch.equal(target, clean)  # the clean x is the target, never modified
    flipped = (seen != clean).float().mean().item()
    assert 0.05 < flipped < 0.3  # about half of the 30 % hit pixels change value


def test_denoising_iwae_is_iwae_with_a_corrupted_encoder_input():
    from elbolab.bounds import iwae

    torch.manual_seed(0)
    model = VAE(30, 3, hidden=[16])
    x = torch.bernoulli(torch.full((8, 30), 0.4))
    cfg = lambda level: tiny_config("bound.name='iwae'", "bound.k=5", "bound.corruption='salt_and_pepper'",  # noqa: E731
                                    f"bound.corruption_level={level}").bound
    torch.manual_seed(2)
    plain = iwae(model, x, k=5)
    torch.manual_seed(2)
    assert torch.equal(training_bound(model, x, None, cfg(0.0), step=0).value, plain.value)
    torch.manual_seed(2)
    noisy = training_bound(model, x, None, cfg(0.4), step=0)
    torch.manual_seed(2)
    x_tilde = corrupt(x, "salt_and_pepper", 0.4)
    torch.testing.assert_close(noisy.value, iwae(model, x, k=5, x_in=x_tilde).value)
    assert not torch.allclose(noisy.value, plain.value)


def test_evaluation_scores_clean_test_images(tmp_path):
    """A DVAE run is evaluated on the clean test set: its eval equals that of the same weights with no corruption."""
    import shutil

    import elbolab
    from elbolab.config import dump_toml
    from elbolab.runs import read_config
    from elbolab.tasks import make_task

    config = tiny_config("train.epochs=1", "bound.corruption='salt_and_pepper'", "bound.corruption_level=0.5")
    task = make_task(config)
    assert all(torch.equal(x, task.x_test[i * 50 : (i + 1) * 50]) for i, (x, _) in enumerate(task.test_batches(50)))
    run = elbolab.train(config, tmp_path / "dvae", progress=False)
    twin = tmp_path / "same-weights-no-noise"
    shutil.copytree(run, twin)
    plain = read_config(twin)
    plain.bound.corruption, plain.bound.corruption_level = "none", 0.0
    (twin / "config.toml").write_text(dump_toml(plain))
    a = elbolab.evaluate(run, ks=[1, 10], n_images=40, progress=False)
    b = elbolab.evaluate(twin, ks=[1, 10], n_images=40, progress=False)
    assert a["log_likelihood"] == b["log_likelihood"] and a["elbo"] == b["elbo"]
