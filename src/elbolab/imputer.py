"""``VAEACImputer``: VAEAC in the scikit-learn shape, and ``impute_file`` behind ``elbolab impute``.

The imputer's constructor parameters are its config (keyword-only, stored
as given, so ``sklearn.base.clone`` and ``get_params`` / ``set_params``
work); ``fit`` trains the model with the library's trainer (``train.fit``,
keeping the epoch with the best validation IWAE bound) and ``transform``
fills every NaN with the point imputation of ``num_imputations`` draws.
numpy arrays in, numpy arrays out; pandas DataFrames in, DataFrames out with
the same columns, index, dtypes and category labels.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .config import Config, apply_overrides
from .data.tabular import Schema, Table, frame_from_table, read_frame, table_from_frame, write_frame
from .errors import ConfigError, DataError, RunError
from .imputation import Standardiser, TabularTask, impute_rows
from .models import build_model
from .runs import atomic_write, load, write_config, write_json, write_text
from .tasks import resolve_device

SCHEMA_FILE = "imputer.json"
MODEL_FILE = "model.pt"


class ImputationWarning(UserWarning):
    """Something about the data the user should know, that does not stop imputation (e.g. nothing missing)."""


class VAEACImputer(TransformerMixin, BaseEstimator):
    """Fill in missing values (NaN) with a VAE with arbitrary conditioning (Ivanov, Figurnov & Vetrov 2019).

    Parameters mirror config fields: the networks (``latent_dim``, ``hidden``,
    ``activation``, ``learn_sigma``), the training masks (``mask_level``),
    optimisation (``epochs``, ``batch_size``, ``lr``, ``seed``, ``device``),
    validation (``valid_fraction``, ``valid_k``), ``num_imputations`` and
    ``categorical`` (column names, or indices for arrays).
    """

    def __init__(
        self,
        *,
        latent_dim: int = 32,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "relu",
        learn_sigma: bool = True,
        mask_level: float = 0.2,
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 3e-4,
        valid_fraction: float = 0.1,
        valid_k: int = 25,
        num_imputations: int = 10,
        categorical: Sequence[Any] | None = None,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = False,
    ) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.learn_sigma = learn_sigma
        self.mask_level = mask_level
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.valid_fraction = valid_fraction
        self.valid_k = valid_k
        self.num_imputations = num_imputations
        self.categorical = categorical
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ config

    def to_config(self) -> Config:
        """The experiment config these parameters stand for (task = tabular, model = vaeac)."""
        overrides = {
            "task": "tabular", "model.name": "vaeac", "model.latent_dim": self.latent_dim,
            "model.hidden": list(self.hidden), "model.activation": self.activation,
            "model.learn_sigma": self.learn_sigma, "bound.mask": "mcar", "bound.mask_level": self.mask_level,
            "train.epochs": self.epochs, "train.batch_size": self.batch_size, "train.lr": self.lr,
            "train.seed": self.seed, "train.device": self.device, "train.valid_k": self.valid_k,
            "data.valid_fraction": self.valid_fraction, "eval.num_imputations": self.num_imputations,
            "data.name": "in-memory",
        }
        return apply_overrides(Config(), [f"{key}={json.dumps(value)}" for key, value in overrides.items()])

    # ------------------------------------------------------------------ encoding

    def _table(self, X: Any, fitted: bool) -> tuple[Table, Any]:
        """The encoded table of X and the frame it came from (None for arrays)."""
        import pandas as pd

        if isinstance(X, pd.DataFrame):
            frame, is_frame = X, True
        else:
            array = np.asarray(X)
            if array.ndim != 2:
                raise DataError(f"X must be 2-D [n_samples, n_features], got shape {array.shape}")
            frame, is_frame = pd.DataFrame(array, columns=[str(j) for j in range(array.shape[1])]), False
        if fitted:
            if is_frame != self.is_frame_:
                kind = "a DataFrame" if self.is_frame_ else "an array"
                raise DataError(f"the imputer was fitted on {kind}; transform the same kind of input")
            return table_from_frame(frame, schema=self.schema_, source="X"), (X if is_frame else None)
        categorical = self.categorical
        if categorical is not None and not is_frame:
            categorical = [str(c) for c in categorical]
        return table_from_frame(frame, categorical, source="X"), (X if is_frame else None)

    def _output(self, values: np.ndarray, frame: Any) -> Any:
        """Encoded rows back to the caller's kind: a DataFrame like the input, or a float array."""
        if frame is None:
            return values.astype(np.float64)
        return frame_from_table(values, self.schema_, index=frame.index)

    # ------------------------------------------------------------------ sklearn API

    def fit(self, X: Any, y: Any = None) -> VAEACImputer:
        """Train VAEAC on the rows of X (NaN = missing); returns self."""
        import pandas as pd

        self.is_frame_ = isinstance(X, pd.DataFrame)
        table, _ = self._table(X, fitted=False)
        self.schema_ = table.schema
        self.n_features_in_ = len(table.schema.columns)
        if self.is_frame_:
            self.feature_names_in_ = np.asarray(table.schema.columns, dtype=object)
        config = self.to_config()
        device = resolve_device(config.train.device)
        from .train import fit as fit_epochs
        from .train import make_optimizer

        torch.manual_seed(config.train.seed)
        generator = torch.Generator().manual_seed(config.train.seed)
        task = TabularTask(config, device, table=table)
        self.standardiser_ = task.standardiser
        model = task.build_model()
        optimizer = make_optimizer(model, config)
        with tempfile.TemporaryDirectory(prefix="elbolab-vaeac-") as run:
            write_config(Path(run), config)  # a real run directory, so runs.load picks best.pt
            fit_epochs(model, task, optimizer, Path(run), generator, {"epoch": 0, "step": 0, "best": None},
                       progress=self.progress)
            self.model_ = load(run, which="best", device=device)
        self.config_ = config
        return self

    def _impute(self, X: Any, n: int) -> tuple[np.ndarray, np.ndarray, Any]:
        check_is_fitted(self, "model_")
        table, frame = self._table(X, fitted=True)
        device = next(self.model_.parameters()).device
        x = torch.as_tensor(self.standardiser_.encode(table.values), dtype=torch.float32, device=device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            point, draws = impute_rows(self.model_, x, n)
        decode = self.standardiser_.decode
        point = decode(point.cpu().double().numpy())
        draws = decode(draws.cpu().double().numpy())
        observed = ~table.missing  # given cells are returned exactly as they came in
        point[observed] = table.values[observed]
        draws[:, observed] = table.values[observed]
        return point, draws, frame

    def transform(self, X: Any) -> Any:
        """X with every NaN replaced by the point imputation (mean of real draws, majority of categorical ones)."""
        point, _, frame = self._impute(X, self.num_imputations)
        return self._output(point, frame)

    def sample(self, X: Any, n_imputations: int = 10) -> list[Any]:
        """``n_imputations`` completed copies of X, one per draw of z from the prior network (multiple imputation)."""
        _, draws, frame = self._impute(X, n_imputations)
        return [self._output(d, frame) for d in draws]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "schema_")
        return np.asarray(self.schema_.columns, dtype=object)

    def _more_tags(self) -> dict[str, Any]:
        return {"allow_nan": True}

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write the fitted imputer to ``directory`` (config.toml, model.pt, imputer.json), each file atomically."""
        check_is_fitted(self, "model_")
        out = Path(directory)
        if out.exists() and any(out.iterdir()):
            raise RunError(f"{out} exists and is not empty; choose a new directory for --save-model")
        state = {"model_spec": self.model_.spec, "model": self.model_.state_dict()}
        atomic_write(out / MODEL_FILE, lambda tmp: torch.save(state, tmp))
        from .config import dump_toml

        write_text(out / "config.toml", dump_toml(self.config_))
        write_json(out / SCHEMA_FILE, {
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
            "schema": self.schema_.to_dict(), "standardiser": self.standardiser_.to_dict(), "is_frame": self.is_frame_,
        })
        return out

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> VAEACImputer:
        """A fitted imputer from a directory written by :meth:`save`."""
        root = Path(directory)
        try:
            saved = json.loads((root / SCHEMA_FILE).read_text())
            state = torch.load(root / MODEL_FILE, map_location=resolve_device(device), weights_only=True)
        except FileNotFoundError:
            raise RunError(f"{root} holds no fitted imputer ({SCHEMA_FILE} and {MODEL_FILE}); fit one with --save-model {root}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise RunError(f"{root}: the saved imputer cannot be read ({type(exc).__name__}); fit it again") from None
        params = {**saved["params"], "device": device}
        imputer = cls(**params)
        imputer.schema_ = Schema.from_dict(saved["schema"])
        imputer.standardiser_ = Standardiser.from_dict(saved["standardiser"])
        imputer.is_frame_ = saved["is_frame"]
        imputer.n_features_in_ = len(imputer.schema_.columns)
        model = build_model(state["model_spec"]["name"], **state["model_spec"]["kwargs"])
        model.load_state_dict(state["model"])
        imputer.model_ = model.to(resolve_device(device)).eval()
        imputer.config_ = imputer.to_config()
        return imputer


# --------------------------------------------------------------------------- elbolab impute


def multiple_imputation_path(output: str | Path) -> Path:
    """Where the long-form multiple imputations go: ``imputed.csv`` -> ``imputed.imputations.csv``."""
    out = Path(output)
    return out.with_name(f"{out.stem}.imputations{out.suffix}")


def long_form(draws: list[Any], index: Any) -> Any:
    """The n completed copies stacked: columns ``row_id``, ``imputation_id``, then the data's columns."""
    import pandas as pd

    parts = []
    for i, frame in enumerate(draws):
        part = frame.reset_index(drop=True)
        part.insert(0, "imputation_id", i + 1)
        part.insert(0, "row_id", np.arange(len(part)))
        parts.append(part)
    return pd.concat(parts, ignore_index=True).sort_values(["row_id", "imputation_id"], kind="stable").reset_index(drop=True)


def impute_file(
    data: str | Path,
    output: str | Path,
    *,
    num_imputations: int = 10,
    categorical: Sequence[str] | None = None,
    epochs: int = 50,
    save_model: str | Path | None = None,
    model: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Impute the missing cells of a CSV / TSV / parquet file; write the completed table (and the long form).

    With ``model`` a saved imputer is reused instead of fitting one. Every
    output is written to a temporary file and renamed, after all imputation is
    done, so a failure leaves no half-written file. Returns what was written.
    """
    if num_imputations < 1:
        raise ConfigError(f"--num-imputations must be >= 1, got {num_imputations}")
    if model is not None and (categorical or save_model):
        raise ConfigError("--model reuses a fitted imputer: --categorical and --save-model apply only when fitting")
    out = Path(output)
    from .data.tabular import table_format

    table_format(out)  # an unknown output format is an error before any work
    if save_model is not None and Path(save_model).exists() and any(Path(save_model).iterdir()):
        raise RunError(f"{save_model} exists and is not empty; choose a new directory for --save-model")
    if Path(data).resolve() == out.resolve():
        raise ConfigError(f"the output {out} is the input file; choose another -o so the original is kept")
    frame = read_frame(data)
    missing = int(frame.isna().to_numpy().sum())
    written: dict[str, Any] = {"input": str(data), "rows": len(frame), "missing_cells": missing, "outputs": []}
    if model is not None:
        imputer = VAEACImputer.load(model, device=device)
        if not imputer.is_frame_:
            raise RunError(f"{model} was fitted on an array, not a table file; fit it with `elbolab impute --save-model`")
    else:
        imputer = VAEACImputer(epochs=epochs, categorical=list(categorical or []), seed=seed, device=device,
                               num_imputations=num_imputations, progress=progress)
    if missing == 0:
        table_from_frame(frame, categorical, source=str(data), schema=imputer.schema_ if model else None)
        warnings.warn(f"{data} has no missing values; writing an unchanged copy to {out}", ImputationWarning, stacklevel=2)
        write_frame(frame, out)
        written["outputs"].append(str(out))
        return written
    if model is None:
        written["notes"] = table_from_frame(frame, categorical, source=str(data)).notes
        imputer.fit(frame)
        if save_model is not None:
            imputer.save(save_model)
            written["model"] = str(save_model)
    else:
        table_from_frame(frame, source=str(data), schema=imputer.schema_)  # name the file in any mismatch
    imputer.num_imputations = num_imputations
    completed = imputer.transform(frame)
    outputs = [(out, completed)]
    if num_imputations > 1:
        outputs.append((multiple_imputation_path(out), long_form(imputer.sample(frame, num_imputations), frame.index)))
    for path, table_out in outputs:
        write_frame(table_out, path)
        written["outputs"].append(str(path))
    return written
