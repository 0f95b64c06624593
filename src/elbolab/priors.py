"""Priors p(z | c). The core needs only the fixed standard normal; prior
networks (CVAE, VAEAC) and RecVAE's composite prior join this module."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_gaussian
from .nets import GaussianEncoder, mlp


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
# --------------------------------------------------------------------------- VAEAC (issue 5)


class SkipPriorNetwork(nn.Module):
    """A prior network p(z | c) = N(mu(c), diag sigma(c)^2) that also hands out its hidden activations.

    An MLP from the (encoded) condition to a diagonal Gaussian. VAEAC's
    generative network reads the observed part through skip connections from
    this network's layers (Ivanov, Figurnov & Vetrov 2019, sec. 4.1 and their
    code's memory layers), so :meth:`features` returns the activations of the
    input and of every hidden layer alongside the distribution.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], latent_dim: int, act: str = "relu") -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        self.layers = nn.ModuleList(mlp([n_in, n_out], act, final_act=True) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.head = mlp([sizes[-1], 2 * latent_dim])
        self.latent_dim = latent_dim
        self.skip_sizes = sizes  # widths of the activations features() returns, input first

    def features(self, c: torch.Tensor) -> tuple[Distribution, list[torch.Tensor]]:
        """p(z | c) and the activations [input, hidden_1, ..., hidden_L], each [B, width]."""
        skips = [c]
        for layer in self.layers:
            skips.append(layer(skips[-1]))  # [B, width]
        loc, log_scale = self.head(skips[-1]).chunk(2, dim=-1)  # [B, latent_dim] each
        return diagonal_gaussian(loc, log_scale.exp()), skips

    def forward(self, c: torch.Tensor) -> Distribution:
        return self.features(c)[0]


def prior_network_regulariser(p: Distribution, sigma_mu: float = 1e4, sigma_sigma: float = 1e-4) -> torch.Tensor:
    """log N(mu | 0, sigma_mu^2) + sigma_sigma (log sigma - sigma) of a Gaussian prior network's outputs, per example [B].

    The weak prior on the prior network's parameters that keeps mu and sigma
    from drifting when a mask leaves the latent unconstrained (Ivanov et al.
    2019, sec. 4.3; constants dropped). Add it to the bound; it is tiny for
    sane outputs (sigma_mu = 1e4, sigma_sigma = 1e-4 are the paper's values).
    """
    mu, sigma = p.mean, p.stddev  # [B, latent_dim]
    return -(mu**2).sum(-1) / (2 * sigma_mu**2) + sigma_sigma * (sigma.log() - sigma).sum(-1)  # [B]
