"""Network builders: MLPs and the Gaussian encoder head the papers use."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_gaussian
from .errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module called ``name`` (a key of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def mlp(sizes: Sequence[int], act: str = "tanh", final_act: bool = False) -> nn.Sequential:
    """Linear layers through ``sizes`` with ``act`` between them (and after the last if ``final_act``).

    Weights follow Glorot & Bengio (2010), as the IWAE paper (Burda et al. 2016, sec. 5) did.
    """
    if len(sizes) < 2:
        raise ConfigError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2 or final_act:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """q(z | x) = N(mu(x), diag sigma(x)^2): an MLP trunk, then one linear layer to [mu, log sigma]."""

    def __init__(self, in_features: int, hidden: Sequence[int], latent_dim: int, act: str = "tanh") -> None:
        super().__init__()
        self.trunk = mlp([in_features, *hidden], act, final_act=True) if hidden else nn.Identity()
        self.head = mlp([hidden[-1] if hidden else in_features, 2 * latent_dim])
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> Distribution:
        loc, log_scale = self.head(self.trunk(x)).chunk(2, dim=-1)  # [B, latent_dim] each
        return diagonal_gaussian(loc, log_scale.exp())
