"""The contract every family member fulfils: q(z | x, c), p(z | c), p(x | z, c).

``log_weights`` is built from those three once, here; bounds (``bounds.py``)
turn its output into objectives. A model never computes its own loss.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from ..distributions import detach_parameters


@dataclass(frozen=True)
class LogWeights:
    """The pieces of log w = log p(x | z, c) + log p(z | c) - log q(z | x, c), z ~ q.

    Every per-sample tensor has shape ``[k, B]``; ``z`` is ``[k, B, latent_dim]``.
    ``q`` and ``p`` are the posterior and prior the samples came from (for analytic KL).
    """

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor
    z: torch.Tensor
    q: Distribution
    p: Distribution

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_px_z + self.log_pz - self.log_qz  # [k, B]


class LatentVariableModel(nn.Module, metaclass=abc.ABCMeta):
    """Base of every model in the family. Subclasses answer three distributions."""

    latent_dim: int

    @abc.abstractmethod
    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """q(z | x, c), batch shape [B], event shape [latent_dim]."""

    @abc.abstractmethod
    def prior(self, c: torch.Tensor | None = None) -> Distribution:
        """p(z | c), event shape [latent_dim]; batch shape [B] or [] when it ignores c."""

    @abc.abstractmethod
    def likelihood(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x | z, c) for z of shape [..., B, latent_dim]; event shape = the data shape."""

    def log_weights(
        self,
        x: torch.Tensor,
        c: torch.Tensor | None = None,
        k: int = 1,
        x_in: torch.Tensor | None = None,
        detach_posterior: bool = False,
    ) -> LogWeights:
        """Draw k reparameterised z ~ q(z | x_in, c) per example and score them against x.

        ``x_in`` is what the encoder sees (a corrupted copy for denoising
        bounds); the likelihood always scores the clean ``x``. With
        ``detach_posterior`` log q(z) uses stopped parameters (STL, DReG).
        """
        q = self.posterior(x if x_in is None else x_in, c)
        z = q.rsample((k,))  # [k, B, latent_dim]
        p = self.prior(c)
        q_score = detach_parameters(q) if detach_posterior else q
        return LogWeights(
            log_px_z=self.likelihood(z, c).log_prob(x),  # [k, B]
            log_pz=p.log_prob(z),  # [k, B]
            log_qz=q_score.log_prob(z),  # [k, B]
            z=z,
            q=q,
            p=p,
        )

    @torch.no_grad()
    def sample(self, n: int, c: torch.Tensor | None = None) -> torch.Tensor:
        """n draws of the likelihood's mean at z ~ p(z | c): shape [n, *data_shape] (or [n, B, ...] with c)."""
        z = self.prior(c).sample((n,))
        return self.likelihood(z, c).mean
