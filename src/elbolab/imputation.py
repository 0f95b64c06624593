"""Imputation with VAEAC: the tabular task, multiple imputation and its metrics.

The task trains on rows whose entries are hidden by random masks OR-ed with
the truly missing ones (Ivanov, Figurnov & Vetrov 2019, sec. 4.2), scores the
bound with the core ``elbo`` plus the prior-network regulariser, validates
with the core ``iwae`` on held-out rows under fixed masks, and keeps the best
validation epoch. Metrics follow the paper's UCI protocol (sec. 5.2): NRMSE
per real column (RMSE on the hidden entries / std of the true column,
averaged over columns) and PFC (share of hidden categorical entries imputed
with the wrong label).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .bounds import BoundTerms, iwae
from .config import BoundConfig, Config
from .corruption import MASKS, hidden_mask
from .data.tabular import Table, load_tabular
from .errors import ConfigError, DataError
from .models import LatentVariableModel, build_model
from .models.vaeac import VAEAC, make_condition
from .priors import prior_network_regulariser

Batch = tuple[torch.Tensor, torch.Tensor | None]  # (x, c), as in tasks.py


# --------------------------------------------------------------------------- standardisation


@dataclass
class Standardiser:
    """Per-column mean and std of the observed values of real columns (categorical columns pass through)."""

    mean: np.ndarray  # [D], 0 for categorical columns
    std: np.ndarray  # [D], 1 for categorical columns

    @classmethod
    def fit(cls, table: Table) -> Standardiser:
        real = np.array([s == 0 for s in table.schema.column_sizes])
        with np.errstate(all="ignore"):
            mean = np.where(real, np.nanmean(table.values, axis=0), 0.0)
            std = np.where(real, np.nanstd(table.values, axis=0), 1.0)
        std = np.where(std > 0, std, 1.0)  # a constant column stays as it is
        return cls(mean, std)

    def encode(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def decode(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> Standardiser:
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64))


# --------------------------------------------------------------------------- imputation and metrics


def point_imputation(draws: torch.Tensor, column_sizes: Sequence[int]) -> torch.Tensor:
    """One row per example from n imputations [n, B, D]: the mean for real columns, the majority vote for categorical ones."""
    point = draws.mean(0)  # [B, D]
    categorical = [j for j, s in enumerate(column_sizes) if s > 0]
    if categorical:
        point[:, categorical] = draws[:, :, categorical].mode(dim=0).values  # ties: the smallest code
    return point


@torch.no_grad()
def impute_rows(model: VAEAC, x: torch.Tensor, n: int = 10, batch_size: int = 1024,
                given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(point [B, D], draws [n, B, D]) for rows x (NaN = missing); entries not ``given`` (default: the NaN ones) are imputed."""
    if n < 1:
        raise ConfigError(f"the number of imputations must be >= 1, got {n}")
    given = ~torch.isnan(x) if given is None else given
    was_training = model.training
    model.eval()
    draws = torch.cat([model.impute(x[i : i + batch_size], given[i : i + batch_size], n)
                       for i in range(0, x.shape[0], batch_size)], dim=1)  # [n, B, D]
    model.train(was_training)
    return point_imputation(draws, model.column_sizes), draws


def nrmse(truth: np.ndarray, imputed: np.ndarray, hidden: np.ndarray, column_sizes: Sequence[int]) -> float:
    """Mean over real columns of RMSE(imputed, truth on hidden entries) / std(true column); NaN when no real column is hidden."""
    scores = []
    for j, size in enumerate(column_sizes):
        rows = hidden[:, j] & ~np.isnan(truth[:, j])
        if size == 0 and rows.any():
            rmse = np.sqrt(np.mean((imputed[rows, j] - truth[rows, j]) ** 2))
            std = np.nanstd(truth[:, j])
            scores.append(rmse / std if std > 0 else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def pfc(truth: np.ndarray, imputed: np.ndarray, hidden: np.ndarray, column_sizes: Sequence[int]) -> float:
    """Proportion of falsely classified entries among the hidden categorical ones; NaN when there are none."""
    columns = [j for j, s in enumerate(column_sizes) if s > 0]
    if not columns:
        return float("nan")
    rows = hidden[:, columns] & ~np.isnan(truth[:, columns])
    if not rows.any():
        return float("nan")
    wrong = np.rint(imputed[:, columns]) != truth[:, columns]
    return float(wrong[rows].mean())


def imputation_metrics(truth: np.ndarray, imputed: np.ndarray, hidden: np.ndarray,
                       column_sizes: Sequence[int]) -> dict[str, float]:
    """NRMSE and PFC of an imputation (arrays in the data's own units, categorical columns as codes)."""
    return {"nrmse": nrmse(truth, imputed, hidden, column_sizes), "pfc": pfc(truth, imputed, hidden, column_sizes)}


# --------------------------------------------------------------------------- method comparison results (issue 6's report)

BENCHMARK_RESULTS = "imputation.json"  # in a run directory: ``benchmarks/imputation.py --run DIR`` writes it


def imputation_summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (data set, method) of a method comparison: mean and std (ddof 1) over mask seeds of NRMSE and PFC.

    ``results`` is what ``benchmarks/imputation.py`` writes:
    ``{"datasets": {name: {"rows": n, "runs": {method: [{"nrmse", "pfc", "seconds", "seed"}, ...]}}}}``.
    A metric that is NaN on every seed (PFC of a table without categorical columns) is NaN.
    """
    rows = []
    for name, entry in results.get("datasets", {}).items():
        for method, runs in entry.get("runs", {}).items():
            row: dict[str, Any] = {"dataset": name, "rows": entry.get("rows"), "method": method, "seeds": len(runs),
                                   "seconds": float(np.mean([r["seconds"] for r in runs])) if runs else float("nan")}
            for metric in ("nrmse", "pfc"):
                values = np.array([r[metric] for r in runs if np.isfinite(r.get(metric, np.nan))], dtype=np.float64)
                row[metric] = float(values.mean()) if values.size else float("nan")
                row[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else float("nan"))
            rows.append(row)
    return rows


def with_prior_regulariser(terms: BoundTerms, p: torch.distributions.Distribution, sigma_mu: float,
                           sigma_sigma: float) -> BoundTerms:
    """The bound plus VAEAC's prior-network regulariser (Ivanov et al. 2019, sec. 4.3), per example."""
    return dataclasses.replace(terms, value=terms.value + prior_network_regulariser(p, sigma_mu, sigma_sigma))


def vaeac_training_bound(model: LatentVariableModel, x: torch.Tensor, c: torch.Tensor, bound: BoundConfig,
                         step: int) -> BoundTerms:
    """VAEAC's training objective for a batch: the configured bound (eq. 4) plus the prior-network regulariser.

    Shared by the tabular task and the image (inpainting) task: only the
    masks and the likelihood differ between them, not the objective.
    """
    from .tasks import training_bound  # tasks.py imports this module for TASKS

    terms = training_bound(model, x, c, bound, step)
    return with_prior_regulariser(terms, model.prior(c), bound.prior_sigma_mu, bound.prior_sigma_sigma)


# --------------------------------------------------------------------------- the task


class TabularTask:
    """A table with missing cells for VAEAC: MCAR training masks, validation IWAE, NRMSE / PFC test metrics.

    ``table`` overrides ``config.data.name`` (the imputer passes the user's
    rows). A ``valid_fraction`` of rows, drawn with ``train.seed``, is held
    out for the validation bound and the test metrics, under fixed masks
    drawn with ``eval.seed``.
    """

    selection_metric = "valid_iwae"

    def __init__(self, config: Config, device: torch.device | str = "cpu", table: Table | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        if config.model.name != "vaeac":
            raise ConfigError(f"the tabular task needs model.name = 'vaeac', got {config.model.name!r}")
        bound = config.bound
        if bound.mask not in MASKS:
            raise ConfigError(f"unknown mask {bound.mask!r}; choose one of {', '.join(MASKS)}")
        if not 0.0 <= config.data.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in [0, 1), got {config.data.valid_fraction}")
        if table is None:
            table = load_tabular(config.data.name, config.data.data_dir or None, config.data.categorical)
        self.table = table
        self.column_sizes = table.schema.column_sizes
        self.standardiser = Standardiser.fit(table)
        x = torch.as_tensor(self.standardiser.encode(table.values), dtype=torch.float32)
        order = torch.as_tensor(np.random.default_rng(config.train.seed).permutation(x.shape[0]))
        n_valid = int(round(config.data.valid_fraction * x.shape[0]))
        if n_valid and x.shape[0] - n_valid < 1:
            raise DataError(f"{table.source}: {x.shape[0]} rows leave none to train on after the validation split")
        self.valid_rows, self.train_rows = order[:n_valid], order[n_valid:]
        self.x_train = x[self.train_rows].to(self.device)
        self.x_valid = x[self.valid_rows].to(self.device)
        cpu = torch.Generator().manual_seed(config.eval.seed)
        self.valid_hidden = hidden_mask(self.x_valid.cpu(), bound.mask, bound.mask_level, cpu).to(self.device)
        self.test_hidden = hidden_mask(self.x_valid.cpu(), "mcar", config.eval.test_mask_level, cpu).to(self.device)

    def build_model(self) -> LatentVariableModel:
        cfg = self.config.model
        return build_model("vaeac", **VAEAC.kwargs_from_config(cfg, self.column_sizes)).to(self.device)

    def num_batches(self) -> int:
        return -(-self.x_train.shape[0] // self.config.train.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        size, bound = self.config.train.batch_size, self.config.bound
        order = torch.randperm(self.x_train.shape[0], generator=generator)
        for start in range(0, len(order), size):
            x = self.x_train[order[start : start + size].to(self.device)]  # [B, D]
            hidden = hidden_mask(x, bound.mask, bound.mask_level)  # the trainer seeds and checkpoints this RNG
            yield x, make_condition(x, ~hidden)

    def loss(self, model: LatentVariableModel, batch: Batch, step: int) -> BoundTerms:
        x, c = batch
        return vaeac_training_bound(model, x, c, self.config.bound, step)

    @torch.inference_mode()
    def validate(self, model: LatentVariableModel) -> dict[str, float]:
        if self.x_valid.shape[0] == 0:
            return {}
        was_training = model.training
        model.eval()
        total = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.eval.seed)
            for start in range(0, self.x_valid.shape[0], 256):
                x = self.x_valid[start : start + 256]
                c = make_condition(x, ~self.valid_hidden[start : start + 256])
                total += iwae(model, x, c, k=self.config.train.valid_k).value.sum().item()
        model.train(was_training)
        return {"valid_iwae": total / self.x_valid.shape[0]}

    def test_batches(self, batch_size: int, n: int = 0) -> Iterator[Batch]:
        stop = self.num_test_examples(n)
        for start in range(0, stop, batch_size):
            x = self.x_valid[start : min(start + batch_size, stop)]
            yield x, make_condition(x, ~self.test_hidden[start : start + x.shape[0]])

    def num_test_examples(self, n: int = 0) -> int:
        return min(n, self.x_valid.shape[0]) if n > 0 else self.x_valid.shape[0]

    def test_metrics(self, model: LatentVariableModel, n: int = 0) -> dict[str, Any]:
        """NRMSE and PFC of the point imputation of the held-out rows under the test mask, in the data's units."""
        stop = self.num_test_examples(n)
        if stop == 0:
            return {}
        x, hidden = self.x_valid[:stop], self.test_hidden[:stop]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.eval.seed)
            point, _ = impute_rows(model, x, self.config.eval.num_imputations, given=~hidden)
        truth = self.table.values[self.valid_rows[:stop].numpy()]
        imputed = self.standardiser.decode(point.cpu().double().numpy())
        metrics = imputation_metrics(truth, imputed, hidden.cpu().numpy(), self.column_sizes)
        return {**metrics, "test_mask_level": self.config.eval.test_mask_level,
                "num_imputations": self.config.eval.num_imputations}
