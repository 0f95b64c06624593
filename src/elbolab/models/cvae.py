"""The conditional VAE of Sohn, Lee & Yan (2015) and its deterministic NN baseline.

Three networks (sec. 3): recognition q(z | x, c), prior p(z | c), generation
p(x | z, c). In elbolab's glossary x is what is predicted (the paper's y) and
c what is given (the paper's x). The objectives are the core bounds with a
conditional prior: ``bounds.elbo`` is the CVAE bound (eq. 4), ``bounds.gsnn``
and ``bounds.hybrid_cvae_gsnn`` the GSNN and hybrid objectives (eqs. 9, 10).

The NN baseline is the same model with no latent variable (``latent_dim=0``):
only the generation network, fed c alone. Its "posterior" and "prior" are the
zero-dimensional Gaussian, so log w = log p(x | c) exactly and it goes through
the same bounds and the same evaluation as the CVAE.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution

from ..config import ModelConfig
from ..distributions import LikelihoodHead, diagonal_gaussian, make_likelihood
from ..errors import ConfigError
from ..nets import GaussianEncoder, mlp
from ..priors import ConditionalPrior
from .base import LatentVariableModel


class CVAE(LatentVariableModel):
    """Recognition MLP on [x, c], prior network on c, generation MLP on [z, c] into a likelihood head."""

    conditional = True  # tasks pass a condition c (a task checks this before building the model)

    def __init__(
        self,
        data_dim: int,
        cond_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        likelihood_options: dict | None = None,
    ) -> None:
        super().__init__()
        if latent_dim < 0 or cond_dim < 1 or data_dim < 1:
            raise ConfigError(f"CVAE needs data_dim, cond_dim >= 1 and latent_dim >= 0, got {data_dim}, {cond_dim}, {latent_dim}")
        self.data_dim, self.cond_dim, self.latent_dim = data_dim, cond_dim, latent_dim
        if latent_dim > 0:
            self.recognition = GaussianEncoder(data_dim + cond_dim, hidden, latent_dim, activation)
            self.prior_net = ConditionalPrior(cond_dim, list(hidden), latent_dim, activation)
        self.head: LikelihoodHead = make_likelihood(likelihood, data_dim, **(likelihood_options or {}))
        self.generation = mlp([latent_dim + cond_dim, *reversed(hidden), self.head.out_features], activation)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int, cond_dim: int) -> dict:
        """Constructor arguments from a ``[model]`` config section and the task's sizes."""
        options = {"sigma": cfg.sigma, "learn_sigma": cfg.learn_sigma} if cfg.likelihood == "gaussian" else {}
        return dict(
            data_dim=data_dim,
            cond_dim=cond_dim,
            latent_dim=cfg.latent_dim,
            hidden=list(cfg.hidden),
            activation=cfg.activation,
            likelihood=cfg.likelihood,
            likelihood_options=options,
        )

    def _point(self, c: torch.Tensor) -> Distribution:
        # The zero-dimensional Gaussian: rsample gives [k, B, 0], log_prob is 0, KL is 0.
        empty = c.new_zeros(c.shape[0], 0)  # [B, 0]
        return diagonal_gaussian(empty, empty + 1.0)

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        if self.latent_dim == 0:
            return self._point(_need(c))
        return self.recognition(torch.cat([x.to(_need(c).dtype), c], dim=-1))  # [B, D + C] -> q(z | x, c)

    def prior(self, c: torch.Tensor | None = None) -> Distribution:
        if self.latent_dim == 0:
            return self._point(_need(c))
        return self.prior_net(_need(c))

    def likelihood(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        c = _need(c).expand(*z.shape[:-1], self.cond_dim)  # [k, B, C]
        return self.head(self.generation(torch.cat([z, c], dim=-1)))  # [k, B, L + C] -> p(x | z, c)

    @torch.no_grad()
    def init_output_bias(self, x_mean: torch.Tensor) -> None:
        """Start the generation network at the marginal of the predicted pixels."""
        bias = self.head.marginal_bias(x_mean)
        if bias is not None:
            self.generation[-1].bias.copy_(bias)


class ConditionalNN(CVAE):
    """The deterministic NN baseline of Sohn et al. (2015, sec. 5.1): the CVAE's generation network on c alone."""

    def __init__(
        self,
        data_dim: int,
        cond_dim: int,
        hidden: Sequence[int] = (500, 500),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        likelihood_options: dict | None = None,
    ) -> None:
        super().__init__(data_dim, cond_dim, 0, hidden, activation, likelihood, likelihood_options)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int, cond_dim: int) -> dict:
        kwargs = CVAE.kwargs_from_config(cfg, data_dim, cond_dim)
        del kwargs["latent_dim"]  # no latent variable, whatever the config says
        return kwargs


def _need(c: torch.Tensor | None) -> torch.Tensor:
    if c is None:
        raise ConfigError("a conditional model needs the condition c; use it with a conditional task (e.g. task = 'quadrants')")
    return c
