"""Priors p(z | c). The core needs only the fixed standard normal; prior
networks (CVAE, VAEAC) and RecVAE's composite prior join this module."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

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
# --------------------------------------------------------------------------- collaborative filtering (issue 3)


class CompositePrior(nn.Module):
    """RecVAE's prior (Shenbin et al. 2020, sec. 3.2, eq. 5), a mixture per latent dimension of

        N(0, I)                       weight 3/20,
        q_old(z | x)                  weight 3/4   (the encoder as it was at the last refresh),
        N(0, e^{wide_log_var} I)      weight 1/10  (a wide component, log variance 10),

    summed over dimensions as in the authors' code (a factorised mixture,
    ``Independent(MixtureSameFamily)``). ``c`` is the user's clean history x;
    ``None`` means the empty history. ``old_encoder`` is frozen: only
    :meth:`refresh` changes it, so its weights are part of every checkpoint.
    """

    def __init__(self, old_encoder: nn.Module, latent_dim: int, weights=(3 / 20, 3 / 4, 1 / 10), wide_log_var: float = 10.0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.old_encoder = _as_buffers(old_encoder)
        self.register_buffer("log_weights", torch.log(torch.tensor(weights, dtype=torch.float32)), persistent=False)
        self.wide_scale = math.exp(0.5 * wide_log_var)

    @torch.no_grad()
    def refresh(self, encoder: nn.Module) -> None:
        """Copy ``encoder``'s current weights into q_old (after each epoch's encoder passes)."""
        self.old_encoder.load_state_dict(encoder.state_dict())

    def forward(self, c: torch.Tensor | None = None) -> Distribution:
        empty = c is None
        if empty:
            c = self.log_weights.new_zeros(1, self.old_encoder.in_features)
        with torch.no_grad():
            old = self.old_encoder(c).base_dist  # Normal, [B, D]
        ones = torch.ones_like(old.loc)
        loc = torch.stack([torch.zeros_like(old.loc), old.loc, torch.zeros_like(old.loc)], dim=-1)  # [B, D, 3]
        scale = torch.stack([ones, old.scale, ones * self.wide_scale], dim=-1)  # [B, D, 3]
        if empty:  # batch shape [] like the other priors without a condition
            loc, scale = loc[0], scale[0]
        mixture = Categorical(logits=self.log_weights.expand(loc.shape))
        return Independent(MixtureSameFamily(mixture, Normal(loc, scale)), 1)


def _as_buffers(module: nn.Module) -> nn.Module:
    """``module`` with every parameter turned into a buffer of the same name: frozen, never seen by an
    optimizer or ``parameters()``, but saved in state_dict and moved with ``.to``."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                del m._parameters[name]
                m.register_buffer(name, p.detach().clone())
    return module
