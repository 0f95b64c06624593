"""Tasks wire data, model and bound together for the model-agnostic trainer.

A task answers: which model to build for this data, which batches an epoch
sees, what the loss of a batch is, what to watch each epoch, and what the
test set is. The trainer (``train.py``) and the evaluator (``evaluate.py``)
only talk to this interface, so a new kind of data is a new task, not a new
training loop.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch

from .bounds import BoundTerms, elbo, gsnn, hybrid_cvae_gsnn, iwae
from .config import BoundConfig, Config
from .corruption import check_corruption, corrupt
from .data import binarize, check_images, load_image_arrays
from .errors import ConfigError, DataError
from .imputation import TabularTask  # imputation (issue 5)
from .models import LatentVariableModel, build_from_config
from .schedules import linear_anneal

Batch = tuple[torch.Tensor, torch.Tensor | None]  # (x, c)


# --------------------------------------------------------------------------- objectives


def _elbo_objective(model, x, c, cfg: BoundConfig, step: int, x_in=None) -> BoundTerms:
    beta = linear_anneal(step, cfg.beta_warmup_steps, cfg.beta, cfg.beta_cap)
    return elbo(model, x, c, beta=beta, k=cfg.k, analytic_kl=cfg.analytic_kl, x_in=x_in)


def _iwae_objective(model, x, c, cfg: BoundConfig, step: int, x_in=None) -> BoundTerms:
    return iwae(model, x, c, k=cfg.k, estimator=cfg.estimator, x_in=x_in)


OBJECTIVES: dict[str, Callable[..., BoundTerms]] = {"elbo": _elbo_objective, "iwae": _iwae_objective}


# conditional VAE (issue 4): the GSNN and hybrid objectives of Sohn et al. (2015, eqs. 9-10)
def _gsnn_objective(model, x, c, cfg: BoundConfig, step: int, x_in=None) -> BoundTerms:
    return gsnn(model, x, c, k=cfg.k)  # z comes from the prior network: the encoder input is unused


def _hybrid_objective(model, x, c, cfg: BoundConfig, step: int, x_in=None) -> BoundTerms:
    return hybrid_cvae_gsnn(model, x, c, alpha=cfg.hybrid_alpha, k=cfg.k, x_in=x_in)


OBJECTIVES["gsnn"] = _gsnn_objective
OBJECTIVES["hybrid"] = _hybrid_objective


def training_bound(
    model: LatentVariableModel, x: torch.Tensor, c: torch.Tensor | None, cfg: BoundConfig, step: int
) -> BoundTerms:
    """The configured bound of a batch at an update step.

    With a corruption set this is the denoising bound (Im et al. 2017): the
    encoder sees a corrupted copy x~, the likelihood scores the clean x.
    """
    if cfg.name not in OBJECTIVES:
        raise ConfigError(f"unknown bound {cfg.name!r}; choose one of {', '.join(OBJECTIVES)}")
    x_in = None if cfg.corruption == "none" else corrupt(x, cfg.corruption, cfg.corruption_level)
    return OBJECTIVES[cfg.name](model, x, c, cfg, step, x_in=x_in)


# --------------------------------------------------------------------------- the task interface


class Task(Protocol):
    """What the trainer and evaluator need from a kind of data."""

    config: Config
    selection_metric: str | None  # a key of validate()'s output to keep the best epoch by (higher is better)

    def build_model(self) -> LatentVariableModel: ...

    def num_batches(self) -> int: ...

    def batches(self, generator: torch.Generator) -> Iterator[Batch]: ...

    def loss(self, model: LatentVariableModel, batch: Batch, step: int) -> BoundTerms: ...

    def validate(self, model: LatentVariableModel) -> dict[str, float]: ...

    def test_batches(self, batch_size: int, n: int = 0) -> Iterator[Batch]: ...

    def num_test_examples(self, n: int = 0) -> int: ...

    def test_metrics(self, model: LatentVariableModel, n: int = 0) -> dict[str, Any]:
        """Task-specific test metrics for eval.json's ``task_metrics`` (ranking, imputation, ...): name -> {mean, se} or a number."""
        ...


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; asking for CUDA without a GPU is an error, never a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but this machine has no usable CUDA GPU; use --device cpu")
    return torch.device("cpu") if device.type == "cpu" else device  # "cpu:0" is the one CPU device


@torch.inference_mode()
def mean_terms(model: LatentVariableModel, batches: Iterator[Batch], seed: int = 0) -> dict[str, float]:
    """Test-set means of the ELBO (k = 1, analytic KL) and its terms, with a fixed seed and the caller's RNG untouched."""
    was_training = model.training
    model.eval()
    totals, n = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0}, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for x, c in batches:
            terms = elbo(model, x, c)
            totals["elbo"] += terms.value.sum().item()
            totals["reconstruction"] += terms.reconstruction.sum().item()
            totals["kl"] += terms.kl.sum().item()
            n += x.shape[0]
    model.train(was_training)
    return {name: value / max(n, 1) for name, value in totals.items()}


# --------------------------------------------------------------------------- images


class ImageTask:
    """Images in [0, 1] as flat vectors, binarized for Bernoulli models (the IWAE paper's MNIST setting).

    Training images are binarized afresh each time they are used
    (``dynamic``) or once by threshold; the test set is binarized once with a
    fixed seed, so every model is scored on the same binary images.
    """

    selection_metric: str | None = None
    auto_compile = True  # train.compile = "auto" may compile its loss (one graph, tests/test_compiled.py)

    def __init__(self, config: Config, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        check_corruption(config.bound.corruption, config.bound.corruption_level)
        data = config.data
        arrays = load_image_arrays(data.name, data.data_dir or None)
        missing = [s for s in [*data.train_splits, data.test_split] if f"x_{s}" not in arrays]
        if missing:
            raise ConfigError(f"dataset {data.name!r} has no split {missing[0]!r}; it has {', '.join(_splits(arrays))}")
        x_train = np.concatenate([arrays[f"x_{s}"] for s in data.train_splits])
        check_images(x_train, f"{data.name} training images")
        x_test_raw = arrays[f"x_{data.test_split}"]
        check_images(x_test_raw, f"{data.name} test images")
        if x_test_raw.shape[1:] != x_train.shape[1:]:
            raise DataError(f"{data.name}: training images have {x_train.shape[1]} pixels and test images "
                            f"{x_test_raw.shape[1]}; they must match")
        self.x_train = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))  # [N, D]
        x_test = torch.from_numpy(np.ascontiguousarray(x_test_raw, dtype=np.float32))
        self.y_test = torch.from_numpy(arrays[f"y_{data.test_split}"]) if f"y_{data.test_split}" in arrays else None
        self.x_test = self._binarize(x_test, torch.Generator().manual_seed(data.test_binarize_seed))

    @property
    def data_dim(self) -> int:
        return self.x_train.shape[1]

    def _binarize(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mode = self.config.data.binarize
        return x if mode == "none" else binarize(x, mode, generator)

    def build_model(self) -> LatentVariableModel:
        return build_from_config(self.config.model, self.data_dim, x_mean=self.x_train.mean(0)).to(self.device)

    def num_batches(self) -> int:
        return -(-self.x_train.shape[0] // self.config.train.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        size = self.config.train.batch_size
        order = torch.randperm(self.x_train.shape[0], generator=generator)
        for start in range(0, len(order), size):
            x = self._binarize(self.x_train.index_select(0, order[start : start + size]), generator)
            yield x.to(self.device, non_blocking=True), None

    def loss(self, model: LatentVariableModel, batch: Batch, step: int) -> BoundTerms:
        x, c = batch
        return training_bound(model, x, c, self.config.bound, step)

    def validate(self, model: LatentVariableModel) -> dict[str, float]:
        n = self.config.train.eval_subset
        if n <= 0:
            return {}
        terms = mean_terms(model, self.test_batches(500, n), seed=self.config.eval.seed)
        return {f"test_{name}": value for name, value in terms.items()}

    def test_batches(self, batch_size: int, n: int = 0) -> Iterator[Batch]:
        x_test = self.x_test[:n] if n > 0 else self.x_test
        for start in range(0, x_test.shape[0], batch_size):
            yield x_test[start : start + batch_size].to(self.device), None

    def num_test_examples(self, n: int = 0) -> int:
        return min(n, self.x_test.shape[0]) if n > 0 else self.x_test.shape[0]

    def test_metrics(self, model: LatentVariableModel, n: int = 0) -> dict[str, Any]:
        # Unconditional images: the bound's dissection is the whole story.
        return {}

    def test_labels(self, n: int = 0) -> torch.Tensor | None:
        """Class labels of the test images (for plots), if the data has them."""
        if self.y_test is None:
            return None
        return self.y_test[:n] if n > 0 else self.y_test


def _splits(arrays: dict[str, Any]) -> list[str]:
    return sorted(k[2:] for k in arrays if k.startswith("x_"))


from .recommendation import RecommendationTask  # noqa: E402  collaborative filtering (issue 3)

TASKS: dict[str, type] = {"images": ImageTask, "tabular": TabularTask, "recommendation": RecommendationTask}


def make_task(config: Config, device: torch.device | str = "cpu") -> Task:
    """The task named by ``config.task`` over its data."""
    try:
        cls = TASKS[config.task]
    except KeyError:
        raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASKS)}") from None
    return cls(config, device)


# conditional VAE (issue 4): MNIST quadrant completion lives in its own module (it builds on ImageTask above)
from .quadrants import QuadrantTask  # noqa: E402

TASKS["quadrants"] = QuadrantTask

# imputation (issue 5): MNIST inpainting with VAEAC builds on ImageTask and the tabular VAEAC pieces
from .inpainting import InpaintingTask  # noqa: E402

TASKS["inpainting"] = InpaintingTask
