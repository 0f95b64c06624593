"""Image inpainting with VAEAC (Ivanov, Figurnov & Vetrov 2019, sec. 5.3) as a Task.

Binarized digits, a random mask per image (``bound.mask``: a rectangle, MCAR
pixels, or a mixture of both) hides part of each; VAEAC learns
p(x_b | x_{1-b}, b) for every such mask with the same pieces as the tabular
task: the condition c = [x_{1-b}, b] (``make_condition``), a Bernoulli
likelihood that scores only the hidden pixels, and the same training bound
plus prior-network regulariser (``vaeac_training_bound``). The test images
are binarized once and masked once, both at fixed seeds, so ``elbolab
evaluate`` scores every model on the same holes: its L_k is the IWAE form
of the bound, an estimate of log p(x_b | x_{1-b}, b) in nats per image.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .bounds import BoundTerms
from .config import Config
from .corruption import hidden_mask
from .errors import ConfigError
from .imputation import impute_rows, vaeac_training_bound
from .models import LatentVariableModel, build_from_config
from .models.vaeac import make_condition
from .tasks import Batch, ImageTask


class InpaintingTask(ImageTask):
    """Binarized images with random holes for VAEAC; c = [given pixels, mask], x_b = the hidden pixels."""

    def __init__(self, config: Config, device: torch.device | str = "cpu") -> None:
        if config.model.name != "vaeac":
            raise ConfigError(f"the inpainting task needs model.name = 'vaeac', got {config.model.name!r}")
        if config.data.binarize == "none":
            raise ConfigError("the inpainting task has a Bernoulli likelihood: set data.binarize to 'dynamic' or 'threshold'")
        super().__init__(config, device)
        bound = config.bound
        fixed = torch.Generator().manual_seed(config.eval.seed)
        self.test_hidden = hidden_mask(self.x_test, bound.mask, bound.mask_level, fixed)  # [N, P], True = hidden

    def build_model(self) -> LatentVariableModel:
        pixels = [0] * self.data_dim  # every pixel a real (here binary) column: nothing to one-hot
        return build_from_config(self.config.model, pixels, "bernoulli", x_mean=self.x_train.mean(0)).to(self.device)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        bound = self.config.bound
        for x, _ in super().batches(generator):  # binarized afresh, [B, P]
            hidden = hidden_mask(x, bound.mask, bound.mask_level)  # the trainer seeds and checkpoints this RNG
            yield x, make_condition(x, ~hidden)

    def loss(self, model: LatentVariableModel, batch: Batch, step: int) -> BoundTerms:
        x, c = batch
        return vaeac_training_bound(model, x, c, self.config.bound, step)

    def test_batches(self, batch_size: int, n: int = 0) -> Iterator[Batch]:
        start = 0
        for x, _ in super().test_batches(batch_size, n):
            hidden = self.test_hidden[start : start + x.shape[0]].to(self.device)  # [B, P]
            start += x.shape[0]
            yield x, make_condition(x, ~hidden)

    @torch.inference_mode()
    def test_metrics(self, model: LatentVariableModel, n: int = 0) -> dict[str, Any]:
        """The test masks' hidden share and the error rate of the point inpainting on the hidden pixels.

        The point inpainting is the per-pixel mean of ``eval.num_imputations``
        decoded draws z ~ p(z | x_{1-b}, b), thresholded at 1/2.
        """
        cfg = self.config.eval
        wrong = hidden_count = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            for x, c in self.test_batches(500, n):
                hidden = c[:, x.shape[1] :] < 0.5  # [B, P]
                point, _ = impute_rows(model, x, cfg.num_imputations, given=~hidden)  # [B, P]
                wrong += ((point > 0.5).to(x.dtype) != x)[hidden].sum().item()
                hidden_count += hidden.sum().item()
        shown = self.num_test_examples(n) * self.data_dim
        return {
            "mask": self.config.bound.mask,
            "mask_level": self.config.bound.mask_level,
            "hidden_fraction": hidden_count / max(shown, 1),
            "hidden_pixel_error": wrong / max(hidden_count, 1.0),
            "num_imputations": cfg.num_imputations,
        }
