"""MNIST quadrant completion (Sohn, Lee & Yan 2015, sec. 5.1) as a Task.

Each square image is cut into four quadrants; 1, 2 or 3 of them are given
and the model predicts the rest. In elbolab's glossary the predicted pixels
are ``x`` (Bernoulli likelihood on them only) and the given pixels are the
condition ``c``. The layout is fixed per run, so c needs no mask. The given
quadrants follow the paper's figure (and pyro's example): bottom-left first,
then top-left, then top-right; with 3 given only the bottom-right is predicted.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from .bounds import importance_sample
from .config import Config
from .errors import ConfigError, DataError
from .models import MODELS, LatentVariableModel, build_from_config
from .tasks import Batch, ImageTask

QUADRANT_ORDER = ("bottom-left", "top-left", "top-right", "bottom-right")  # given in this order
GIVEN_RANGE = (1, 3)

# Sohn et al. (2015), Table 1: negative conditional log-likelihood (nats) on the MNIST test set, S = 100.
PAPER_TABLE_1 = {
    1: {"NN": 99.75, "CVAE": 63.91},
    2: {"NN": 62.18, "CVAE": 44.73},
    3: {"NN": 25.99, "CVAE": 20.95},
}


def check_given(given: int) -> int:
    """``given`` itself if it is a valid quadrant count (1, 2 or 3), else a ConfigError naming it and the range."""
    lo, hi = GIVEN_RANGE
    if isinstance(given, bool) or not isinstance(given, int) or not lo <= given <= hi:
        raise ConfigError(f"the number of given quadrants must be {lo}, 2 or {hi} (the rest is predicted), got {given!r}")
    return given


def image_side(n_pixels: int) -> int:
    """The side of a square single-channel image of ``n_pixels`` pixels; it must be even to have quadrants."""
    side = math.isqrt(n_pixels)
    if side * side == n_pixels and side % 2 == 0 and side > 0:
        return side
    hint = ""
    grey = n_pixels // 3
    if n_pixels % 3 == 0 and math.isqrt(grey) ** 2 == grey:
        hint = f" (it looks like 3 channels of {math.isqrt(grey)} x {math.isqrt(grey)}: convert the images to grey)"
    raise DataError(
        f"quadrant completion needs square single-channel images with an even side (e.g. 28 x 28 = 784 pixels), "
        f"got {n_pixels} pixels per image{hint}"
    )


def flatten_images(images: torch.Tensor) -> torch.Tensor:
    """Images [N, P], [N, H, W] or [N, 1, H, W] as [N, P]; other channel counts or shapes are DataErrors."""
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise DataError(
                f"quadrant completion needs single-channel images, got {images.shape[1]} channels "
                f"(shape {tuple(images.shape)}); convert them to grey, shape [N, 1, H, W]"
            )
        images = images[:, 0]
    if images.dim() == 3:
        if images.shape[1] != images.shape[2]:
            raise DataError(f"quadrant completion needs square images, got {images.shape[1]} x {images.shape[2]}")
        images = images.flatten(1)
    if images.dim() != 2:
        raise DataError(f"expected images of shape [N, P], [N, H, W] or [N, 1, H, W], got {tuple(images.shape)}")
    image_side(images.shape[1])
    return images


def given_mask(side: int, given: int) -> torch.Tensor:
    """A boolean [side * side] mask, True on the pixels of the ``given`` given quadrants."""
    check_given(given)
    half = side // 2
    rows = torch.arange(side).unsqueeze(1).expand(side, side)  # [side, side]
    cols = torch.arange(side).unsqueeze(0).expand(side, side)
    top, left = rows < half, cols < half
    regions = {"bottom-left": ~top & left, "top-left": top & left, "top-right": top & ~left, "bottom-right": ~top & ~left}
    mask = torch.zeros(side, side, dtype=torch.bool)
    for name in QUADRANT_ORDER[:given]:
        mask |= regions[name]
    return mask.flatten()  # [side * side]


def split_quadrants(images: torch.Tensor, given: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, c): the pixels to predict [N, P - G] and the given pixels [N, G], each in raster order."""
    images = flatten_images(images)
    mask = given_mask(image_side(images.shape[1]), given).to(images.device)
    return images[:, ~mask], images[:, mask]


def merge_quadrants(x: torch.Tensor, c: torch.Tensor, given: int) -> torch.Tensor:
    """The whole images [..., P] from predicted pixels x [..., P - G] and given pixels c [..., G] (inverse of split)."""
    n_pixels = x.shape[-1] + c.shape[-1]
    mask = given_mask(image_side(n_pixels), given).to(x.device)
    images = x.new_empty(*x.shape[:-1], n_pixels)
    images[..., mask] = c.to(x.dtype).expand(*x.shape[:-1], c.shape[-1])
    images[..., ~mask] = x
    return images


class QuadrantTask(ImageTask):
    """Predict the missing quadrants x of a binarized digit from the given ones c (``data.given_quadrants``).

    Training images are binarized afresh each time they are used (as for
    ImageTask), then split; the test set is binarized once with a fixed seed.
    """

    def __init__(self, config: Config, device: torch.device | str = "cpu") -> None:
        self.given = check_given(config.data.given_quadrants)
        super().__init__(config, device)
        self.side = image_side(self.x_train.shape[1])
        self.mask = given_mask(self.side, self.given)  # [P], True = given (c)

    @property
    def data_dim(self) -> int:
        return int((~self.mask).sum())

    @property
    def cond_dim(self) -> int:
        return int(self.mask.sum())

    def build_model(self) -> LatentVariableModel:
        cfg = self.config.model
        if cfg.name not in MODELS:
            raise ConfigError(f"unknown model {cfg.name!r}; choose one of {', '.join(MODELS)}")
        cls = MODELS[cfg.name]
        if not getattr(cls, "conditional", False):
            options = ", ".join(name for name, c in MODELS.items() if getattr(c, "conditional", False))
            raise ConfigError(f"task 'quadrants' needs a conditional model, got {cfg.name!r}; choose one of {options}")
        x_mean = self.x_train[:, ~self.mask].mean(0)  # the predicted pixels' marginal
        return build_from_config(cfg, self.data_dim, self.cond_dim, x_mean=x_mean).to(self.device)

    def _split(self, images: torch.Tensor) -> Batch:
        return images[:, ~self.mask].to(self.device), images[:, self.mask].to(self.device)  # x [B, P-G], c [B, G]

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        size = self.config.train.batch_size
        order = torch.randperm(self.x_train.shape[0], generator=generator)
        for start in range(0, len(order), size):
            yield self._split(self._binarize(self.x_train.index_select(0, order[start : start + size]), generator))

    def test_batches(self, batch_size: int, n: int = 0) -> Iterator[Batch]:
        x_test = self.x_test[:n] if n > 0 else self.x_test
        for start in range(0, x_test.shape[0], batch_size):
            yield self._split(x_test[start : start + batch_size])

    @torch.inference_mode()
    def test_metrics(self, model: LatentVariableModel, n: int = 0) -> dict[str, Any]:
        """The paper's protocol next to the paper's numbers: -log p(x | c) by importance sampling with S = 100.

        Proposal q(z | x, c), prior p(z | c) (Sohn et al. 2015, sec. 5.1);
        this is ``bounds.importance_sample`` with k = 100, one estimate per image.
        """
        from .evaluate import mean_and_se  # evaluate imports this module through tasks

        cfg = self.config.eval
        values = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for x, c in self.test_batches(cfg.batch_size, n):
                values.append(importance_sample(model, x, c, k=100, k_chunk=100).value.cpu())  # [B]
        paper = PAPER_TABLE_1[self.given]
        return {
            "given_quadrants": self.given,
            "neg_cll_S100": mean_and_se(-torch.cat(values)),
            "paper_neg_cll_NN": paper["NN"],
            "paper_neg_cll_CVAE": paper["CVAE"],
        }
