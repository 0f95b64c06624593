"""The VAE of Kingma & Welling (2014) and Burda et al. (2016).

VAE, beta-VAE and IWAE share this model: they differ only in the bound
(``bounds.elbo`` with beta, or ``bounds.iwae`` with k), chosen by the config.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution

from ..config import ModelConfig
from ..distributions import LikelihoodHead, make_likelihood
from ..nets import GaussianEncoder, mlp
from ..priors import StandardNormal
from .base import LatentVariableModel


class VAE(LatentVariableModel):
    """Gaussian encoder MLP, standard normal prior, MLP decoder into a likelihood head."""

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        likelihood_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.encoder = GaussianEncoder(data_dim, hidden, latent_dim, activation)
        self.head: LikelihoodHead = make_likelihood(likelihood, data_dim, **(likelihood_options or {}))
        self.decoder = mlp([latent_dim, *reversed(hidden), self.head.out_features], activation)
        self.prior_dist = StandardNormal(latent_dim)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int) -> dict:
        """Constructor arguments from a ``[model]`` config section."""
        options = {"sigma": cfg.sigma, "learn_sigma": cfg.learn_sigma} if cfg.likelihood == "gaussian" else {}
        return dict(
            data_dim=data_dim,
            latent_dim=cfg.latent_dim,
            hidden=list(cfg.hidden),
            activation=cfg.activation,
            likelihood=cfg.likelihood,
            likelihood_options=options,
        )

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return self.encoder(x)

    def prior(self, c: torch.Tensor | None = None) -> Distribution:
        return self.prior_dist()

    def likelihood(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return self.head(self.decoder(z))

    @torch.no_grad()
    def init_output_bias(self, x_mean: torch.Tensor) -> None:
        """Start the decoder at the data's marginal (e.g. the logit of the mean pixel).

        A common warm start for image VAEs: the first epochs then learn
        structure, not the average image.
        """
        bias = self.head.marginal_bias(x_mean)
        if bias is not None:
            self.decoder[-1].bias.copy_(bias)
