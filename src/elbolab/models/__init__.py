"""The family's models, by name. A model is built from keyword arguments that
are recorded in its checkpoint, so ``elbolab.load`` needs no data to rebuild it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ModelConfig
from .base import LatentVariableModel, LogWeights
from .cvae import CVAE, ConditionalNN  # conditional VAE (issue 4)
from .cf import MultDAE, MultVAE, RecVAE  # collaborative filtering (issue 3)
from .linear_gaussian import LinearGaussian
from .vae import VAE
from .vaeac import VAEAC  # imputation (issue 5)

MODELS: dict[str, type[LatentVariableModel]] = {
    "vae": VAE,
    "linear-gaussian": LinearGaussian,
    # conditional VAE (issue 4)
    "cvae": CVAE,
    "conditional-nn": ConditionalNN,
    "vaeac": VAEAC,  # imputation (issue 5)
    # collaborative filtering (issue 3)
    "mult-vae": MultVAE,
    "mult-dae": MultDAE,
    "recvae": RecVAE,
}


def build_from_config(cfg: "ModelConfig", *dims: Any, x_mean: torch.Tensor | None = None) -> LatentVariableModel:
    """The model a ``[model]`` config section names, sized by ``dims`` (e.g. data_dim), via its ``kwargs_from_config``.

    With ``x_mean`` (the training data's mean) and ``init_output_bias`` set,
    the decoder starts at the data's marginal.
    """
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.name!r}; choose one of {', '.join(MODELS)}")
    model = build_model(cfg.name, **MODELS[cfg.name].kwargs_from_config(cfg, *dims))
    if x_mean is not None and cfg.init_output_bias and hasattr(model, "init_output_bias"):
        model.init_output_bias(x_mean)
    return model


def build_model(name: str, **kwargs: Any) -> LatentVariableModel:
    """The model called ``name`` built with ``kwargs``; ``model.spec`` records both for checkpoints."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    model = cls(**kwargs)
    model.spec = {"name": name, "kwargs": kwargs}
    return model


__all__ = ["CVAE", "ConditionalNN", "MODELS", "LatentVariableModel", "LinearGaussian", "LogWeights", "VAE", "VAEAC", "build_from_config", "build_model"]
__all__ += ["MultDAE", "MultVAE", "RecVAE"]  # collaborative filtering (issue 3)
