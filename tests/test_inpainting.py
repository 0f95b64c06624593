"""VAEAC inpainting on binary images (issue 5): the image masks, the Bernoulli likelihood that scores only
hidden pixels, the inpainting task trained and evaluated for real on the 8x8 digits, and the inpainting grid."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from elbolab.bounds import elbo
from elbolab.cli import app
from elbolab.completions import HIDDEN_MARK, inpainting_grid, run_completion_grid
from elbolab.corruption import MASKS, hidden_mask, mcar_mask, rectangle_mask, rectangle_or_mcar_mask
from elbolab.errors import ConfigError
from elbolab.evaluate import evaluate
from elbolab.models import build_model
from elbolab.models.vaeac import make_condition
from elbolab.priors import prior_network_regulariser
from elbolab.tasks import make_task
from elbolab.train import train

from conftest import tiny_config


def inpainting_config(*overrides):
    """VAEAC inpainting on the embedded 8x8 digits, a few seconds."""
    return tiny_config(
        "task='inpainting'", "model.name='vaeac'", "model.hidden=[32, 32]", "model.latent_dim=4",
        "model.activation='relu'", "bound.mask='rectangle_or_mcar'", "bound.mask_level=0.5", "eval.ks=[1, 20]",
        "eval.num_imputations=3", *overrides,
    )


def is_one_rectangle(hidden: np.ndarray) -> bool:
    """True when the hidden pixels of one square image are exactly a filled axis-aligned rectangle."""
    rows, cols = np.nonzero(hidden)
    if rows.size == 0:
        return False
    box = hidden[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return bool(box.all()) and box.sum() == hidden.sum()


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("pixels", [64, 784])
def test_image_masks_have_the_images_shape_and_are_reproducible_at_a_seed(name, pixels):
    first = MASKS[name]((40, pixels), 0.5, torch.Generator().manual_seed(3))
    again = MASKS[name]((40, pixels), 0.5, torch.Generator().manual_seed(3))
    other = MASKS[name]((40, pixels), 0.5, torch.Generator().manual_seed(4))
    assert first.shape == (40, pixels) and first.dtype == torch.bool
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.any(1).all()  # every image has a hole at level 0.5


def test_mcar_pixel_masks_hide_the_asked_share():
    for level in (0.1, 0.5, 0.9):
        share = mcar_mask((500, 784), level, torch.Generator().manual_seed(0)).float().mean().item()
        assert share == pytest.approx(level, abs=0.01)
    assert not mcar_mask((10, 784), 0.0).any()


def test_rectangle_masks_are_one_rectangle_no_larger_than_the_level_on_any_square_image():
    for side in (8, 28):
        masks = rectangle_mask((200, side * side), 0.5, torch.Generator().manual_seed(1)).reshape(200, side, side).numpy()
        assert all(is_one_rectangle(m) for m in masks)
        heights, widths = masks.any(2).sum(1), masks.any(1).sum(1)
        assert heights.max() <= 0.5 * side and widths.max() <= 0.5 * side and heights.min() >= 1
        assert len(set(zip(heights, widths))) > 5  # sizes vary
    with pytest.raises(ConfigError, match="square"):
        rectangle_mask((2, 50), 0.5)


def test_rectangle_or_mcar_mixes_both_kinds_about_half_each():
    masks = rectangle_or_mcar_mask((400, 784), 0.6, torch.Generator().manual_seed(2))
    kinds = np.array([is_one_rectangle(m) for m in masks.reshape(400, 28, 28).numpy()])
    assert 0.4 < kinds.mean() < 0.6  # each image: a rectangle or MCAR pixels with equal odds
    assert masks[~torch.from_numpy(kinds)].float().mean().item() == pytest.approx(0.6, abs=0.02)  # the MCAR ones
    x = torch.zeros(5, 784)
    x[0, 0] = float("nan")
    assert hidden_mask(x, "rectangle_or_mcar", 0.0)[0, 0]  # OR-ed with the missing entries, as every mask


# --------------------------------------------------------------------------- the Bernoulli likelihood scores hidden pixels only


def tiny_image_vaeac(seed=0, pixels=64):
    torch.manual_seed(seed)
    return build_model("vaeac", column_sizes=[0] * pixels, latent_dim=3, hidden=[16, 16], likelihood="bernoulli")


def test_image_vaeac_likelihood_counts_only_the_hidden_pixels():
    model = tiny_image_vaeac()
    x = torch.bernoulli(torch.full((6, 64), 0.4))
    hidden = rectangle_or_mcar_mask(x.shape, 0.5, torch.Generator().manual_seed(0))
    c = make_condition(x, ~hidden)
    z = model.prior(c).sample((2,))  # [2, 6, 3]
    p = model.likelihood(z, c)
    flipped = torch.where(hidden, x, 1 - x)  # the given pixels' values as targets changed, the hidden ones kept
    torch.testing.assert_close(p.log_prob(x), p.log_prob(flipped))
    by_hand = torch.distributions.Bernoulli(logits=p.logits).log_prob(x.expand(2, 6, 64))  # [2, 6, 64]
    torch.testing.assert_close(p.log_prob(x), (by_hand * hidden).sum(-1))
    nothing_hidden = make_condition(x, torch.ones_like(hidden))
    assert torch.equal(elbo(model, x, nothing_hidden).reconstruction, torch.zeros(6))  # no pixel to score
    with pytest.raises(ConfigError, match="likelihood"):
        build_model("vaeac", column_sizes=[0] * 4, likelihood="gaussian")


def test_inpainting_task_bound_is_the_tabular_vaeac_objective_on_image_masks():
    task = make_task(inpainting_config())
    model = task.build_model()
    x, c = next(task.batches(torch.Generator().manual_seed(0)))
    hidden = c[:, 64:] == 0
    assert set(x.unique().tolist()) <= {0.0, 1.0} and 0.2 < hidden.float().mean() < 0.5
    torch.manual_seed(1)
    terms = task.loss(model, (x, c), step=0)
    torch.manual_seed(1)
    plain = elbo(model, x, c)
    torch.testing.assert_close(terms.value, plain.value + prior_network_regulariser(model.prior(c)))
    again = make_task(inpainting_config())  # the test masks are fixed by eval.seed
    assert torch.equal(task.test_hidden, again.test_hidden)
    assert not torch.equal(task.test_hidden, make_task(inpainting_config("eval.seed=1")).test_hidden)
    with pytest.raises(ConfigError, match="vaeac"):
        make_task(inpainting_config("model.name='vae'"))


# --------------------------------------------------------------------------- a real run: train, evaluate, grid


@pytest.fixture(scope="module")
def inpainting_run(tmp_path_factory):
    run = train(inpainting_config("train.epochs=2"), tmp_path_factory.mktemp("inpaint") / "vaeac", progress=False)
    evaluate(run, n_images=40, progress=False)
    return run


def test_inpainting_run_evaluates_the_iwae_bound_on_masked_test_images(inpainting_run):
    from elbolab.runs import read_eval, read_metrics

    result = read_eval(inpainting_run)
    assert result["task"] == "inpainting" and result["n_examples"] == 40
    curve = result["bound_curve"]
    assert curve["1"]["mean"] < curve["20"]["mean"] < 0  # L_1 <= L_20: the IWAE form of the bound
    metrics = result["task_metrics"]
    assert 0.2 < metrics["hidden_fraction"] < 0.5 and 0 <= metrics["hidden_pixel_error"] < 0.5
    records = read_metrics(inpainting_run)
    assert len(records) == 2 and math.isfinite(records[-1]["test_elbo"])


def test_inpainting_grid_rows_are_given_pixels_samples_and_truth(inpainting_run):
    from elbolab.runs import load

    model = load(inpainting_run)
    task = make_task(inpainting_config())
    x, c = next(task.test_batches(4, 4))
    grid = inpainting_grid(model, x, c, n=3, scale=2)
    tile = 8 * 2 + 1
    assert grid.shape == (4 * tile + 1, 5 * tile + 1, 3) and grid.dtype == np.uint8
    hidden = (c[:, 64:] == 0).numpy().reshape(4, 8, 8).repeat(2, 1).repeat(2, 2)  # [4, 16, 16]

    def cell(i, j):
        return grid[1 + i * tile : (i + 1) * tile, 1 + j * tile : (j + 1) * tile]  # [16, 16, 3]

    for i in range(4):
        first, truth = cell(i, 0), cell(i, 4)
        assert (first[hidden[i]] == HIDDEN_MARK).all()  # the hole marked in the given-pixels column
        assert (first[~hidden[i]] == truth[~hidden[i]]).all()  # given pixels as in the truth
        for j in (1, 2, 3):
            assert (cell(i, j)[~hidden[i]] == truth[~hidden[i]]).all()  # samples keep the given pixels
        assert not (truth[hidden[i]] == HIDDEN_MARK).all(-1).any()
    torch.manual_seed(0)
    expected = inpainting_grid(model, x, c, n=3)
    np.testing.assert_array_equal(run_completion_grid(inpainting_run, n=3, rows=4, seed=0), expected)


def test_sample_command_writes_the_inpainting_grid(inpainting_run, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["sample", str(inpainting_run), "-o", str(out), "--n", "2", "--rows", "3"])
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(out).convert("RGB")).shape == (3 * 17 + 1, 4 * 17 + 1, 3)
