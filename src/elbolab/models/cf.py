"""Collaborative-filtering VAEs (issue 3): x is a user's click vector over the items.

Mult-VAE and Mult-DAE (Liang, Krishnan, Hoffman & Jebara 2018) and RecVAE
(Shenbin, Alekseev, Tutubalina, Malykh & Nikolenko 2020). Each is a
composition: an encoder over the L2-normalised clicks, a prior, a decoder
into the multinomial likelihood head. Input dropout is the bound's
corruption (``bound.corruption = "dropout"``), so the denoising form comes
from ``corruption.py``; the KL weight (annealed beta, or RecVAE's
gamma * |x_u|) from the task. Inputs may be dense or torch CSR
(``elbolab.sparse``); the first layer (``SparseLinear``) never densifies a
CSR batch.

The condition ``c`` of these models is the user's own clean history (the
recommendation task passes c = x). The encoders divide their (dropped-out)
input by the norm of c, i.e. normalise, then drop out, as Liang et al.'s and
Shenbin et al.'s code do; RecVAE's prior also reads c.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from ..config import ModelConfig
from ..distributions import MultinomialHead, PointMass, diagonal_gaussian
from ..errors import ConfigError
from ..nets import Linear, activation, mlp
from ..priors import CompositePrior, StandardNormal
from ..sparse import SparseLinear, l2_normalize_rows
from .base import LatentVariableModel, LogWeights
from .vae import VAE


class MultVAE(VAE):
    """Mult-VAE (Liang et al. 2018, sec. 2.2): [I-600-200-600-I], tanh, q(z | x) on x / ||x||."""

    def __init__(self, data_dim: int, latent_dim: int = 200, hidden: Sequence[int] = (600,), activation: str = "tanh") -> None:
        super().__init__(data_dim, latent_dim, hidden, activation, likelihood="multinomial")
        self.encoder.trunk[0] = SparseLinear.from_linear(self.encoder.trunk[0])  # same initial weights, sparse-aware

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int) -> dict:
        return dict(data_dim=data_dim, latent_dim=cfg.latent_dim, hidden=list(cfg.hidden), activation=cfg.activation)

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return self.encoder(l2_normalize_rows(x, norms_of=c))


class MultDAE(VAE):
    """Mult-DAE (Liang et al. 2018, sec. 2.3): [I-200-I], tanh, a deterministic encoder (q is a point mass).

    Trained with beta = 0 and input dropout, its bound is the multinomial
    log-likelihood of the clean clicks given the dropped-out input; weight
    decay (train.weight_decay) is its regulariser. It shares the VAE's prior,
    likelihood and decoder warm start; only the encoder differs.
    """

    def __init__(self, data_dim: int, latent_dim: int = 200, activation: str = "tanh") -> None:
        LatentVariableModel.__init__(self)  # not VAE.__init__: its Gaussian encoder is not this model's
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.encoder = mlp([data_dim, latent_dim], activation, final_act=True)
        self.encoder[0] = SparseLinear.from_linear(self.encoder[0])
        self.head = MultinomialHead(data_dim)
        self.decoder = mlp([latent_dim, data_dim])
        self.prior_dist = StandardNormal(latent_dim)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int) -> dict:
        return dict(data_dim=data_dim, latent_dim=cfg.latent_dim, activation=cfg.activation)

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return PointMass(self.encoder(l2_normalize_rows(x, norms_of=c)))  # [B, latent_dim]


class RecVAEEncoder(nn.Module):
    """RecVAE's encoder (Shenbin et al. 2020, sec. 3.1 and their code): x / ||x||, then 5 dense layers with
    swish, layer norm (eps 0.1) and dense skip sums h_l = LN(swish(W_l h_{l-1} + sum_{j<l} h_j)), then mu, log var.
    ``c`` (the clean history) gives the norm when x is a dropped-out copy (normalise, then drop out)."""

    def __init__(self, in_features: int, hidden: int = 600, n_layers: int = 5, latent_dim: int = 200) -> None:
        super().__init__()
        self.in_features = in_features
        self.layers = nn.ModuleList([SparseLinear(in_features, hidden), *(nn.Linear(hidden, hidden) for _ in range(n_layers - 1))])
        self.norms = nn.ModuleList([nn.LayerNorm(hidden, eps=0.1) for _ in range(n_layers)])
        self.act = activation("swish")
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        h = self.norms[0](self.act(self.layers[0](l2_normalize_rows(x, norms_of=c))))  # [B, hidden]; gather-sum for CSR x
        skip = h
        for layer, norm in zip(self.layers[1:], self.norms[1:]):
            h = norm(self.act(layer(h) + skip))
            skip = skip + h
        loc, log_var = self.head(h).chunk(2, dim=-1)  # [B, latent_dim] each
        return diagonal_gaussian(loc, (0.5 * log_var).exp())


class RecVAE(LatentVariableModel):
    """RecVAE (Shenbin et al. 2020): the encoder above, the composite prior, a linear decoder, multinomial likelihood.

    Its KL weight gamma * |x_u| and the alternating encoder / decoder updates
    belong to the training plan (``RecommendationTask``); :meth:`refresh_prior`
    is the step between them. The condition c is the clean history; when the
    caller gives none, ``log_weights`` uses x itself.
    """

    alternating_updates = True  # the task trains encoder and decoder in separate phases

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 200,
        hidden: int = 600,
        n_layers: int = 5,
        mixture_weights: Sequence[float] = (3 / 20, 3 / 4, 1 / 10),
    ) -> None:
        super().__init__()
        if len(mixture_weights) != 3 or abs(sum(mixture_weights) - 1.0) > 1e-6 or min(mixture_weights) <= 0:
            raise ConfigError(f"RecVAE needs 3 positive prior mixture weights summing to 1, got {list(mixture_weights)}")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.encoder = RecVAEEncoder(data_dim, hidden, n_layers, latent_dim)
        self.prior_dist = CompositePrior(copy.deepcopy(self.encoder), latent_dim, tuple(mixture_weights))
        self.decoder = Linear(latent_dim, data_dim)
        self.head = MultinomialHead(data_dim)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, data_dim: int) -> dict:
        widths = set(cfg.hidden)
        if len(widths) != 1:
            raise ConfigError(f"RecVAE's dense skip sums need equal widths in model.hidden, got {list(cfg.hidden)}")
        return dict(data_dim=data_dim, latent_dim=cfg.latent_dim, hidden=cfg.hidden[0], n_layers=len(cfg.hidden))

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return self.encoder(x, c)

    def prior(self, c: torch.Tensor | None = None) -> Distribution:
        return self.prior_dist(c)

    def likelihood(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        return self.head(self.decoder(z))

    def log_weights(self, x, c=None, k=1, x_in=None, detach_posterior=False) -> LogWeights:
        return super().log_weights(x, x if c is None else c, k=k, x_in=x_in, detach_posterior=detach_posterior)

    def refresh_prior(self) -> None:
        """q_old <- q: the prior's posterior component becomes the current encoder (RecVAE, sec. 3.2)."""
        self.prior_dist.refresh(self.encoder)

    @torch.no_grad()
    def init_output_bias(self, x_mean: torch.Tensor) -> None:
        """Start the decoder at the item popularity (log of the mean click rate)."""
        self.decoder.bias.copy_(self.head.marginal_bias(x_mean))


__all__ = ["MultDAE", "MultVAE", "RecVAE", "RecVAEEncoder"]
