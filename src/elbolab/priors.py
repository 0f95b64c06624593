"""Priors p(z | c). The core needs only the fixed standard normal; prior
networks (CVAE, VAEAC) and RecVAE's composite prior join this module."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

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
