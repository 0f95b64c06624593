"""Typed experiment configs: dataclasses filled from TOML presets and ``--set`` overrides.

A config has one section per stage of the data flow (data, model, bound,
train, eval). Unknown keys and values of the wrong type are errors, so a
typo never silently trains the default.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, Union

import tomli_w

from .errors import ConfigError

Switch = Union[bool, Literal["auto"]]  # on, off, or decided per run (e.g. elbolab.compiled.should_compile)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    """Where the data comes from and how it is presented to the model."""

    name: str = "mnist"  # a key of elbolab.data.DATASETS, or a path to an .npz with x_train / x_test
    binarize: str = "dynamic"  # dynamic (fresh Bernoulli draw per use), threshold (x > 0.5), none
    train_splits: list[str] = field(default_factory=lambda: ["train", "valid"])  # IWAE paper: all 60k
    test_split: str = "test"
    test_binarize_seed: int = 0  # the one fixed binarization of the test set every model is scored on
    data_dir: str = ""  # empty: $ELBOLAB_DATA or ~/.cache/elbolab
    # conditional VAE (issue 4): MNIST quadrant completion (task = "quadrants")
    given_quadrants: int = 1  # 1, 2 or 3 quadrants given as c (Sohn et al. 2015, sec. 5.1); the rest is x
    # imputation (issue 5): tables with missing cells (task = "tabular")
    categorical: list[str] = field(default_factory=list)  # columns to treat as categorical besides non-numeric ones
    valid_fraction: float = 0.15  # rows held out for the validation IWAE bound (checkpoint selection)
    # collaborative filtering (issue 3): interaction files and Liang et al. (2018)'s split
    user_col: str = "user"  # column names of a user's own CSV / TSV / parquet file
    item_col: str = "item"
    rating_col: str = "rating"  # "": implicit feedback, every row is a positive
    timestamp_col: str = ""
    sep: str = ""  # "": "," for .csv, tab otherwise
    duplicates: str = "last"  # a repeated user-item pair: last, first, max (rating) or error
    min_rating: float = 3.5  # ratings > min_rating are positives
    min_user_count: int = 5
    min_item_count: int = 0
    heldout_users: int = 10_000  # validation users, and as many test users
    heldout_fraction: float = 0.0  # > 0: hold out this fraction of users for each instead
    target_fraction: float = 0.2  # share of each held-out user's items to predict
    split_seed: int = 98765  # Liang et al.'s seed


@dataclass
class ModelConfig:
    """The networks, prior and likelihood (a key of elbolab.MODELS and its sizes)."""

    name: str = "vae"
    latent_dim: int = 50
    hidden: list[int] = field(default_factory=lambda: [200, 200])  # encoder widths; the decoder mirrors them
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    sigma: float = 1.0  # Gaussian likelihood scale (initial value when learned)
    learn_sigma: bool = False
    init_output_bias: bool = True  # decoder output bias = the training data's marginal


@dataclass
class BoundConfig:
    """The objective: elbo (with beta) or iwae (with k and a gradient estimator)."""

    name: str = "elbo"
    k: int = 1
    beta: float = 1.0
    beta_warmup_steps: int = 0  # beta rises linearly from 0 over this many updates (0: constant)
    analytic_kl: bool = True
    estimator: str = "reparam"  # reparam, stl, dreg (iwae only)
    corruption: str = "none"  # the encoder sees a corrupted x (denoising bound): none, salt_and_pepper, gaussian, dropout
    corruption_level: float = 0.0  # flip / drop probability, or the Gaussian noise scale
    # conditional VAE (issue 4)
    hybrid_alpha: float = 0.5  # bound.name = "hybrid": alpha * CVAE + (1 - alpha) * GSNN (Sohn et al. 2015, eq. 10)
    # imputation (issue 5): VAEAC's training masks and its prior-network regulariser (Ivanov et al. 2019, sec. 4.3)
    mask: str = "mcar"  # mcar or rectangle (images); OR-ed with the truly missing entries
    mask_level: float = 0.2  # MCAR probability (the paper's 0.2), or a rectangle's largest side as a fraction
    prior_sigma_mu: float = 1e4
    prior_sigma_sigma: float = 1e-4
    # collaborative filtering (issue 3)
    beta_cap: float = 1e30  # beta never exceeds this (Mult-VAE: anneal toward 1, capped at 0.2)
    gamma: float = 0.0  # > 0: RecVAE's per-user KL weight gamma * |x_u| instead of beta


@dataclass
class TrainConfig:
    """Optimisation: Adam with the IWAE paper's settings by default."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant, or iwae: lr * 10^(-i/7) for 3^i epochs (Burda et al. 2016)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-4
    weight_decay: float = 0.0  # L2 on the weight matrices (ndim > 1) only, not biases or norm gains
    seed: int = 0
    device: str = "cpu"  # cpu, cuda, cuda:N, or auto
    eval_subset: int = 1000  # test examples for the per-epoch test ELBO (0: skip)
    # imputation (issue 5)
    valid_k: int = 25  # importance samples of the per-epoch validation IWAE bound (the VAEAC code's 25)
    # collaborative filtering (issue 3): RecVAE's alternating updates
    encoder_passes: int = 3  # passes over the data updating the encoder (input dropout on) per epoch
    decoder_passes: int = 1  # then passes updating the decoder (no dropout)
    # distributed training and mixed precision (issue 7)
    precision: str = "fp32"  # fp32, or bf16 (autocast; needs a CUDA GPU with bfloat16)
    # speed (issue 2)
    compile: Switch = "auto"  # fuse each step's loss and gradient with torch.compile (inductor); same numbers up to rounding; auto: long CPU runs (compiled.py)


@dataclass
class EvalConfig:
    """The test-time dissection of the bound."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 50, 500, 5000])
    k_chunk: int = 200  # importance samples per pass: memory ~ k_chunk * batch_size * data_dim floats
    batch_size: int = 50  # test examples per pass: 10,000 rows per pass put the decoder on oneDNN (nets.Linear)
    n_images: int = 0  # 0: the whole test set
    seed: int = 0
    active_threshold: float = 0.01  # Burda et al. 2016, sec. 5.2
    # imputation (issue 5)
    num_imputations: int = 10  # draws of z from the prior network per row for the test imputation metrics
    test_mask_level: float = 0.5  # MCAR share hidden in the test rows (the VAEAC paper's 50%)
    # speed (issue 2)
    compile: Switch = "auto"  # fuse each chunk's k-sample log-weights with torch.compile; auto: where it pays (compiled.py)


@dataclass
class Config:
    """A whole experiment. ``preset`` records which preset it started from."""

    preset: str = ""
    description: str = ""
    task: str = "images"  # a key of elbolab.tasks.TASKS
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bound: BoundConfig = field(default_factory=BoundConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- conversion


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``kind`` (int, float, str, bool, list[...], Literal, Union)."""
    origin = typing.get_origin(kind)
    if origin is Union:
        for arm in typing.get_args(kind):
            try:
                return _coerce(value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {' or '.join(_kind_name(arm) for arm in typing.get_args(kind))}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(kind) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be {_kind_name(kind)}, got {value!r}")
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item_kind, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where} must be {_kind_name(kind)}, got {value!r}")


def _kind_name(kind: Any) -> str:
    """``bool``, ``"auto"``: how an error message names an annotation."""
    if typing.get_origin(kind) is Literal:
        return " or ".join(f'"{v}"' for v in typing.get_args(kind))
    return getattr(kind, "__name__", str(kind))


def from_dict(data: dict[str, Any], cls: type = Config, where: str = "") -> Any:
    """Build the dataclass ``cls`` from nested dicts; unknown keys are errors."""
    types = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        kind = types[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"config section [{where}{name}] must be a table, got {value!r}")
            kwargs[name] = from_dict(value, kind, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}{name}")
    built = cls(**kwargs)
    if cls is Config:
        check_ranges(built)
    return built


def _estimators() -> tuple[str, ...]:
    from .bounds import ESTIMATORS  # the bounds own the names; imported late, bounds needs torch

    return ESTIMATORS


# The values a field may take where its type allows more ("dotted key": (test, what the message says)).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model.latent_dim": (lambda v: v >= 1, ">= 1"),
    "model.hidden": (lambda v: all(h >= 1 for h in v), "a list of layer widths >= 1"),
    "model.sigma": (lambda v: math.isfinite(v) and v > 0, "> 0"),
    "bound.k": (lambda v: v >= 1, ">= 1"),
    "bound.estimator": (lambda v: v in _estimators(), "one of reparam, stl, dreg"),
    "bound.beta": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "bound.beta_warmup_steps": (lambda v: v >= 0, ">= 0"),
    "bound.beta_cap": (lambda v: v >= 0, ">= 0"),
    "bound.gamma": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "bound.corruption_level": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "bound.hybrid_alpha": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "bound.mask_level": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.batch_size": (lambda v: v >= 1, ">= 1"),
    "train.lr": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "train.adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.adam_eps": (lambda v: math.isfinite(v) and v > 0, "> 0"),
    "train.weight_decay": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "train.eval_subset": (lambda v: v >= 0, ">= 0 (0: no per-epoch test ELBO)"),
    "train.valid_k": (lambda v: v >= 1, ">= 1"),
    "train.encoder_passes": (lambda v: v >= 0, ">= 0"),
    "train.decoder_passes": (lambda v: v >= 0, ">= 0"),
    "eval.ks": (lambda v: len(v) > 0 and all(k >= 1 for k in v), "a non-empty list of sample counts >= 1"),
    "eval.k_chunk": (lambda v: v >= 1, ">= 1"),
    "eval.batch_size": (lambda v: v >= 1, ">= 1"),
    "eval.n_images": (lambda v: v >= 0, ">= 0 (0: the whole test set)"),
    "eval.active_threshold": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "eval.num_imputations": (lambda v: v >= 1, ">= 1"),
    "eval.test_mask_level": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def check_ranges(config: Config) -> None:
    """A ConfigError for the first field outside its range (``RANGES``): a zero batch or a negative
    learning rate is caught when the config is read, not as a ZeroDivisionError deep in training."""
    for key, (test, rule) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not test(value):
            raise ConfigError(f"{key} must be {rule}, got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as nested plain dicts (the form written to a run's config.toml)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------- presets and files


def preset_names() -> list[str]:
    """Names of the presets shipped in elbolab/presets."""
    root = resources.files("elbolab") / "presets"
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> Config:
    """The preset called ``name``, as a Config."""
    path = resources.files("elbolab") / "presets" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(preset_names())}")
    config = from_dict(tomllib.loads(path.read_text()))
    config.preset = name
    return config


def load_toml(path: str | Path) -> Config:
    """A Config from a TOML file (a run's config.toml or a user's own preset)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text (TOML)") from None
    try:
        return from_dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {path} is not valid TOML: {err}") from None


def dump_toml(config: Config) -> str:
    """The config as TOML text."""
    return tomli_w.dumps(to_dict(config))


# --------------------------------------------------------------------------- overrides


def _parse_value(text: str) -> Any:
    """A TOML value (1e-3, true, [200, 200], "x"); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def resolve_key(key: str, cls: type = Config) -> list[str]:
    """The path of ``key`` in the config: dotted (``bound.k``) or a bare field name unique across sections."""
    parts = key.split(".")
    if len(parts) == 1:
        hits = [[key]] if key in {f.name for f in dataclasses.fields(cls)} else []
        for f in dataclasses.fields(cls):
            kind = _field_types(cls)[f.name]
            if dataclasses.is_dataclass(kind) and key in {g.name for g in dataclasses.fields(kind)}:
                hits.append([f.name, key])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            options = ", ".join(".".join(h) for h in hits)
            raise ConfigError(f"config key {key!r} is ambiguous; use one of {options}")
        raise ConfigError(f"unknown config key {key!r}; see `elbolab presets --show NAME` for the keys")
    # Dotted: check each step.
    kind: Any = cls
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(kind) or part not in {f.name for f in dataclasses.fields(kind)}:
            raise ConfigError(f"unknown config key {key!r} (no {'.'.join(parts[: i + 1])!r})")
        kind = _field_types(kind)[part]
    return parts


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings to a copy of ``config``, type-checked against its dataclasses."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        path = resolve_key(key.strip())
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = _parse_value(text.strip())
    return from_dict(data)
