"""Priors p(z | c). The core needs only the fixed standard normal; prior
networks (CVAE, VAEAC) and RecVAE's composite prior join this module."""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_gaussian
from .nets import GaussianEncoder  # conditional VAE (issue 4): the prior network's MLP


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


# conditional VAE (issue 4): a prior network p(z | c)


class ConditionalPrior(nn.Module):
    """p(z | c) = N(mu(c), diag sigma(c)^2): an MLP from the condition c to a diagonal Gaussian.

    The CVAE's prior network (Sohn, Lee & Yan 2015, sec. 3): z depends on the
    input it conditions on, so KL(q(z | x, c) || p(z | c)) is between two
    amortised Gaussians and stays analytic. General on purpose: c is any
    vector [B, cond_dim] (given pixels, a mask, a label embedding).
    """

    def __init__(self, cond_dim: int, hidden: list[int], latent_dim: int, act: str = "tanh") -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = GaussianEncoder(cond_dim, hidden, latent_dim, act)

    def forward(self, c: torch.Tensor | None = None) -> Distribution:
        if c is None:
            raise ValueError("ConditionalPrior needs the condition c")
        return self.net(c)
