"""A linear-Gaussian latent variable model (probabilistic PCA with an amortized encoder).

p(z) = N(0, I), p(x | z) = N(W z + b, sigma^2 I), so log p(x) is exact:
p(x) = N(b, W W^T + sigma^2 I) (Tipping & Bishop 1999). The exact posterior is
Gaussian with covariance (I + W^T W / sigma^2)^{-1}, diagonal when the columns
of W are orthogonal, so the Gaussian encoder can represent it exactly. This is
the model the tests use to check every bound and estimator against the truth.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, MultivariateNormal

from ..config import ModelConfig
from ..distributions import diagonal_gaussian
from ..priors import StandardNormal
from .base import LatentVariableModel


class LinearGaussian(LatentVariableModel):
    """x = W z + b + sigma * eps; q(z | x) = N(A x + c, diag(exp(2 s)))."""

    def __init__(self, data_dim: int, latent_dim: int = 2, sigma: float = 1.0, learn_sigma: bool = False) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.W = nn.Parameter(torch.randn(data_dim, latent_dim) / math.sqrt(latent_dim))
        self.b = nn.Parameter(torch.zeros(data_dim))
        log_sigma = torch.tensor(math.log(sigma))
        self.log_sigma = nn.Parameter(log_sigma) if learn_sigma else nn.Buffer(log_sigma)
        self.encoder = nn.Linear(data_dim, latent_dim)
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))
        self.prior_dist = StandardNormal(latent_dim)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int) -> dict:
        """Constructor arguments from a ``[model]`` config section."""
        return dict(data_dim=data_dim, latent_dim=cfg.latent_dim, sigma=cfg.sigma, learn_sigma=cfg.learn_sigma)

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return diagonal_gaussian(self.encoder(x), self.log_scale.exp().expand(x.shape[0], -1))

    def prior(self, c: torch.Tensor | None = None) -> Distribution:
        return self.prior_dist()

    def likelihood(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        loc = z @ self.W.T + self.b  # [..., B, data_dim]
        return diagonal_gaussian(loc, self.log_sigma.exp().expand_as(loc))

    def exact_log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) [B] in closed form."""
        cov = self.W @ self.W.T + self.log_sigma.exp() ** 2 * torch.eye(self.data_dim, dtype=self.W.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def exact_posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z | x) in closed form (Bishop 2006, eq. 12.42)."""
        s2 = self.log_sigma.exp() ** 2
        precision = torch.eye(self.latent_dim, dtype=self.W.dtype) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / s2  # [B, latent_dim]
        return MultivariateNormal(loc, covariance_matrix=cov)

    @torch.no_grad()
    def set_exact_encoder(self) -> None:
        """Make q(z | x) the exact posterior (possible when W^T W is diagonal)."""
        s2 = self.log_sigma.exp() ** 2
        precision = torch.eye(self.latent_dim) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(precision)
        self.encoder.weight.copy_(cov @ self.W.T / s2)
        self.encoder.bias.copy_(-(cov @ self.W.T @ self.b) / s2)
        self.log_scale.copy_(0.5 * torch.log(torch.diagonal(cov)))
