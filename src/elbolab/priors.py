"""Priors p(z | c). The core needs only the fixed standard normal; prior
networks (CVAE, VAEAC) and RecVAE's composite prior join this module."""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_gaussian


class StandardNormal(nn.Module):
    """p(z) = N(0, I), independent of any condition."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # Buffers follow the module to its device and dtype.
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, c: torch.Tensor | None = None) -> Distribution:
        return diagonal_gaussian(self.loc, self.scale)
