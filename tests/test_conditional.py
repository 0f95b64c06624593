"""CVAE, GSNN, the hybrid objective, the NN baseline and the quadrant-completion task (issue 4)."""
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

import elbolab
from elbolab.bounds import elbo, gsnn, hybrid_cvae_gsnn, importance_sample
from elbolab.completions import completion_grid, png_bytes
from elbolab.errors import ConfigError, DataError
from elbolab.models import CVAE, ConditionalNN
from elbolab.quadrants import given_mask, merge_quadrants, split_quadrants
from elbolab.tasks import make_task

from typer.testing import CliRunner

from elbolab.cli import app

from conftest import run_cli, tiny_config
from test_cli import one_line_error


def quadrant_config(*overrides):
    """Quadrant completion on the embedded 8x8 digits (quadrants of 4x4), a few seconds."""
    return tiny_config(
        "task='quadrants'", "model.name='cvae'", "model.hidden=[32]", "model.latent_dim=4", "eval.ks=[1, 20]",
        *overrides,
    )


def tiny_cvae(seed=0, given=1):
    torch.manual_seed(seed)
    model = CVAE(data_dim=16 * (4 - given), cond_dim=16 * given, latent_dim=3, hidden=[12])
    x = torch.bernoulli(torch.full((6, 16 * (4 - given)), 0.4))
    c = torch.bernoulli(torch.full((6, 16 * given), 0.4))
    return model, x, c


# --------------------------------------------------------------------------- quadrants


def test_quadrant_layout_follows_the_paper():
    image = torch.arange(16.0).reshape(1, 4, 4)  # rows 0-1 top, cols 0-1 left
    x, c = split_quadrants(image, 1)
    assert c.tolist() == [[8.0, 9.0, 12.0, 13.0]]  # bottom-left given
    assert split_quadrants(image, 2)[1].tolist() == [[0.0, 1.0, 4.0, 5.0, 8.0, 9.0, 12.0, 13.0]]  # left half
    assert split_quadrants(image, 3)[0].tolist() == [[10.0, 11.0, 14.0, 15.0]]  # only bottom-right predicted
    for given in (1, 2, 3):
        assert int(given_mask(28, given).sum()) == 196 * given
        x, c = split_quadrants(image, given)
        assert torch.equal(merge_quadrants(x, c, given), image.flatten(1))


@pytest.mark.parametrize(
    "shape, needle",
    [((2, 3, 28, 28), "3 channels"), ((2, 785), "785 pixels"), ((2, 7, 7), "49 pixels"), ((2, 28, 27), "28 x 27"),
     ((2, 2352), "3 channels of 28 x 28")],
)
def test_bad_image_shapes_are_data_errors(shape, needle):
    with pytest.raises(DataError, match=needle):
        split_quadrants(torch.zeros(shape), 1)


@pytest.mark.parametrize("given", [0, 4, -1])
def test_quadrant_count_outside_1_to_3(given):
    with pytest.raises(ConfigError, match=rf"1, 2 or 3 .*got {given}"):
        given_mask(28, given)


# --------------------------------------------------------------------------- bounds


def test_cvae_bound_is_the_core_elbo_with_the_conditional_prior():
    model, x, c = tiny_cvae()
    terms = elbo(model, x, c)
    torch.testing.assert_close(terms.kl, kl_divergence(model.posterior(x, c), model.prior(c)))
    other = elbo(model, x, 1 - c).kl
    assert not torch.allclose(terms.kl, other)  # the prior moves with c


def test_gsnn_draws_z_from_the_prior_network():
    model, x, c = tiny_cvae()
    torch.manual_seed(5)
    terms = gsnn(model, x, c, k=4)
    torch.manual_seed(5)
    z = model.prior(c).rsample((4,))  # [4, B, latent]
    torch.testing.assert_close(terms.value, model.likelihood(z, c).log_prob(x).mean(0))
    assert torch.equal(terms.kl, torch.zeros_like(terms.kl)) and terms.log_weights.shape == (4, 6)
    terms.value.mean().backward()
    assert model.prior_net.net.head[0].weight.grad.abs().sum() > 0  # the prior network learns
    assert model.recognition.head[0].weight.grad is None  # the recognition network is not used


def test_hybrid_interpolates_cvae_and_gsnn():
    model, x, c = tiny_cvae()
    torch.manual_seed(1)
    cvae_value = elbo(model, x, c).value
    gsnn_value = gsnn(model, x, c).value
    for alpha in (0.0, 0.3, 1.0):
        torch.manual_seed(1)
        mixed = hybrid_cvae_gsnn(model, x, c, alpha=alpha)
        torch.testing.assert_close(mixed.value, alpha * cvae_value + (1 - alpha) * gsnn_value)
    with pytest.raises(ConfigError, match=r"\[0, 1\], got 1.5"):
        hybrid_cvae_gsnn(model, x, c, alpha=1.5)


def test_importance_sampled_conditional_likelihood_is_above_the_elbo():
    model, x, c = tiny_cvae()
    torch.manual_seed(0)
    l1 = importance_sample(model, x, c, k=1).value.mean()
    l500 = importance_sample(model, x, c, k=500, k_chunk=100).value.mean()
    assert l500 > l1


def test_nn_baseline_is_exact_and_has_no_latent():
    torch.manual_seed(0)
    model = ConditionalNN(data_dim=48, cond_dim=16, hidden=[12])
    x, c = torch.bernoulli(torch.full((5, 48), 0.4)), torch.bernoulli(torch.full((5, 16), 0.4))
    exact = model.likelihood(c.new_zeros(5, 0), c).log_prob(x)  # log p(x | c), no z
    torch.testing.assert_close(elbo(model, x, c).value, exact)
    torch.testing.assert_close(importance_sample(model, x, c, k=50).value, exact)
    torch.testing.assert_close(gsnn(model, x, c).value, exact)
    assert model.latent_dim == 0 and not hasattr(model, "recognition")


# --------------------------------------------------------------------------- the task, training, evaluation


def test_quadrant_task_batches_split_the_binarized_images():
    task = make_task(quadrant_config("data.given_quadrants=2"))
    x, c = next(task.test_batches(10))
    assert x.shape == (10, 32) and c.shape == (10, 32)
    torch.testing.assert_close(merge_quadrants(x, c, 2), task.x_test[:10])
    x, c = next(task.batches(torch.Generator().manual_seed(0)))
    assert set(torch.unique(torch.cat([x, c], 1)).tolist()) <= {0.0, 1.0}


def test_a_plain_vae_on_the_quadrant_task_is_a_clear_error():
    task = make_task(quadrant_config("model.name='vae'"))
    with pytest.raises(ConfigError, match="needs a conditional model, got 'vae'; choose one of cvae, conditional-nn"):
        task.build_model()


@pytest.mark.parametrize("model, bound", [("cvae", "elbo"), ("cvae", "gsnn"), ("cvae", "hybrid"), ("conditional-nn", "elbo")])
def test_each_objective_trains_and_evaluates(tmp_path, model, bound):
    config = quadrant_config(f"model.name='{model}'", f"bound.name='{bound}'", "train.epochs=4", "data.given_quadrants=2")
    run = elbolab.train(config, tmp_path / "run", progress=False)
    metrics = elbolab.runs.read_metrics(run)
    assert metrics[-1]["train_bound"] > metrics[0]["train_bound"]  # it learns its objective (GSNN never trains q)
    result = elbolab.evaluate(run, n_images=30, progress=False)
    tm = result["task_metrics"]
    assert tm["given_quadrants"] == 2 and tm["paper_neg_cll_CVAE"] == 44.73 and tm["paper_neg_cll_NN"] == 62.18
    # -log p(x | c) <= -ELBO: the importance-sampled estimate is the tighter one (exact for the NN)
    assert tm["neg_cll_S100"]["mean"] <= -result["elbo"]["mean"] + 1e-6
    assert result["log_likelihood"]["mean"] >= result["elbo"]["mean"] - 1e-6


def test_completion_grid_marks_given_quadrants_and_shows_diversity():
    model, x, c = tiny_cvae(given=1)
    torch.manual_seed(0)
    grid = completion_grid(model, c[:2], x[:2], given=1, n=3, scale=1)
    assert grid.shape == (2 * 9 + 1, 4 * 9 + 1, 3) and grid.dtype == np.uint8
    tile = grid[1:9, 1 + 9 : 9 + 9]  # row 0, first completion
    bottom_left, top_right = tile[4:, :4], tile[:4, 4:]
    assert (bottom_left[..., 2] > bottom_left[..., 0]).all()  # given: drawn in blue
    assert (top_right[..., 0] == top_right[..., 2]).all()  # predicted: grey
    first, second = grid[1:9, 10:18], grid[1:9, 19:27]
    assert not np.array_equal(first, second)  # two z ~ p(z | c), two completions
    nn = ConditionalNN(data_dim=48, cond_dim=16, hidden=[12])
    nn_grid = completion_grid(nn, c[:2], x[:2], given=1, n=3, scale=1)
    assert np.array_equal(nn_grid[1:9, 10:18], nn_grid[1:9, 19:27])  # the NN has one answer


def test_png_bytes_is_a_valid_png():
    import struct
    import zlib

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = png_bytes(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (3, 2)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert raw == b"\x00" + rgb[0].tobytes() + b"\x00" + rgb[1].tobytes()


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def quadrant_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("q") / "run"
    elbolab.train(quadrant_config("train.epochs=2"), run, progress=False)
    return run


def test_sample_writes_a_completion_png(quadrant_run, tmp_path):
    out = tmp_path / "completions.png"
    result = run_cli("sample", str(quadrant_run), "--given", "1", "--n", "4", "--rows", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    tile = 8 * 2 + 1  # 8x8 digits at scale 2, one separator line
    assert np.frombuffer(data[16:24], dtype=">u4").tolist() == [5 * tile + 1, 3 * tile + 1]


def cli_error(args, *needles):
    """A user error through the command (typer's CliRunner, in process): exit 1, one line naming the value."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("elbolab: error:"), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_sample_bad_quadrant_count_as_a_real_process(quadrant_run, tmp_path):
    one_line_error(run_cli("sample", str(quadrant_run), "--given", "4", "--out", str(tmp_path / "c.png")), "1, 2 or 3", "got 4")


@pytest.mark.parametrize(
    "args, needles",
    [(["--given", "0"], ["1, 2 or 3", "got 0"]), (["--given", "2"], ["trained with 1 given", "--given 2"]),
     (["--n", "0"], ["got n=0"])],
)
def test_sample_bad_input(quadrant_run, tmp_path, args, needles):
    cli_error(["sample", quadrant_run, *args, "--out", tmp_path / "c.png"], *needles)


def test_train_bad_quadrant_count_and_noise_level(tmp_path):
    base = ["train", "--preset", "vae-digits", "--out", tmp_path / "r", "--no-progress"]
    cli_error([*base, "--set", "task='quadrants'", "--set", "model.name='cvae'", "--set", "given_quadrants=5"],
              "1, 2 or 3", "got 5")
    cli_error([*base, "--set", "bound.corruption='salt_and_pepper'", "--set", "bound.corruption_level=1.5"],
              "[0, 1]", "got 1.5")


@pytest.mark.parametrize("pixels, needle", [(49, "got 49 pixels"), (2352, "3 channels of 28 x 28")])
def test_train_wrong_image_size_or_channels(tmp_path, pixels, needle):
    x = np.random.default_rng(0).random((20, pixels), dtype=np.float32)
    np.savez(tmp_path / "images.npz", x_train=x, x_test=x[:5])
    cli_error(
        ["train", "--preset", "cvae-mnist", "--set", f"data.name='{tmp_path / 'images.npz'}'",
         "--set", "train_splits=['train']", "--out", tmp_path / "r", "--no-progress"],
        needle,
    )
