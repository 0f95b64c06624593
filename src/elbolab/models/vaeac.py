"""VAE with arbitrary conditioning (VAEAC; Ivanov, Figurnov & Vetrov, ICLR 2019).

One model learns p(x_b | x_{1-b}, b) for every mask b, so it fills in any
subset of a row. In elbolab's terms (the glossary): x is the row (NaN where
the data itself is missing, categorical columns as codes); the condition
c = [x_{1-b}, b] carries the given part (zeros elsewhere) and the mask
b (1 = given to the model). c = None means nothing is given.

    q(z | x, b)            proposal network: sees the whole row and the mask
    p(z | x_{1-b}, b)      prior network: sees only the given part and the mask
    p(x_b | z, x_{1-b}, b) generative network, reading the prior network's
                           activations through skip connections (sec. 4.1)

The bound is the core ELBO with this conditional prior (eq. 4): the
likelihood scores only the entries hidden by b that the data has.
Networks see 1 - b (1 = to impute), as the paper's code does, and the
proposal also sees which entries are missing from the data.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from ..config import ModelConfig
from ..distributions import MaskedBernoulliHead, TabularHead, one_hot_columns
from ..errors import ConfigError
from ..nets import GaussianEncoder, mlp
from ..priors import SkipPriorNetwork
from .base import LatentVariableModel


def make_condition(x: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """c = [x_{1-b}, b] [B, 2D] from a row x [B, D] and a mask ``given`` (True = shown to the model)."""
    given = given & ~torch.isnan(x)
    x_given = torch.where(given, x, torch.zeros_like(x))  # [B, D]
    return torch.cat([x_given, given.to(x.dtype)], dim=-1)  # [B, 2D]


class SkipDecoder(nn.Module):
    """The generative network: z, then one layer per prior-network activation (deepest first), each fed by a skip."""

    def __init__(self, latent_dim: int, skip_sizes: Sequence[int], out_features: int, act: str) -> None:
        super().__init__()
        *inner, last = list(reversed(skip_sizes))  # deepest activation first; the encoded input last
        width = inner[0] if inner else last
        self.first = mlp([latent_dim, width], act, final_act=True)
        layers = []
        for skip, n_out in zip(inner, [*inner[1:], None]):
            layers.append(mlp([width + skip, n_out or width], act, final_act=True))
            width = n_out or width
        self.layers = nn.ModuleList(layers)
        self.out = mlp([width + last, out_features])

    def forward(self, z: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        def joined(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
            return torch.cat([h, skip.expand(*h.shape[:-1], skip.shape[-1])], dim=-1)  # [k, B, width + skip]

        h = self.first(z)  # [k, B, width]
        deepest_first = list(reversed(skips))
        for layer, skip in zip(self.layers, deepest_first[:-1]):
            h = layer(joined(h, skip))  # [k, B, width]
        return self.out(joined(h, deepest_first[-1]))  # [k, B, out_features]


# The likelihood over x_b: per-column Gaussian / categorical for tables, Bernoulli per pixel for binary images.
LIKELIHOODS = ("tabular", "bernoulli")


class VAEAC(LatentVariableModel):
    """Proposal and prior networks over one-hot rows + masks, skip-connected generative network, tabular or Bernoulli likelihood.

    ``likelihood="bernoulli"`` is VAEAC for binary images (MNIST inpainting,
    Ivanov et al. 2019, sec. 5.3): every column real (``column_sizes`` all
    0), the likelihood a Bernoulli per pixel scoring only the hidden ones.
    """

    def __init__(
        self,
        column_sizes: Sequence[int],
        latent_dim: int = 64,
        hidden: Sequence[int] = (256, 256, 256, 256),
        activation: str = "relu",
        sigma: float = 1.0,
        learn_sigma: bool = True,
        likelihood: str = "tabular",
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown VAEAC likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if likelihood == "bernoulli" and any(column_sizes):
            raise ConfigError("VAEAC's Bernoulli likelihood is for binary images: every column must be real (size 0)")
        if not column_sizes:
            raise ConfigError("VAEAC needs at least one column")
        if not hidden:
            raise ConfigError("VAEAC needs at least one hidden layer (model.hidden)")
        self.column_sizes = [int(s) for s in column_sizes]
        self.data_dim = len(self.column_sizes)
        self.latent_dim = latent_dim
        width = sum(max(1, s) for s in self.column_sizes)  # one-hot row
        d = self.data_dim
        self.proposal = GaussianEncoder(width + 2 * d, hidden, latent_dim, activation)  # [row, to-impute, missing]
        self.prior_net = SkipPriorNetwork(width + d, hidden, latent_dim, activation)  # [given part, to-impute]
        if likelihood == "bernoulli":
            self.head = MaskedBernoulliHead(d)
        else:
            self.head = TabularHead(d, self.column_sizes, sigma=sigma, learn_sigma=learn_sigma)
        self.decoder = SkipDecoder(latent_dim, self.prior_net.skip_sizes, self.head.out_features, activation)

    @staticmethod
    def kwargs_from_config(cfg: ModelConfig, column_sizes: Sequence[int], likelihood: str = "tabular") -> dict:
        """Constructor arguments from a ``[model]`` config section and the table's column layout (or P real pixel columns)."""
        return dict(
            likelihood=likelihood,
            column_sizes=list(column_sizes),
            latent_dim=cfg.latent_dim,
            hidden=list(cfg.hidden),
            activation=cfg.activation,
            sigma=cfg.sigma,
            learn_sigma=cfg.learn_sigma,
        )

    def _split(self, c: torch.Tensor | None, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_given [B, D], to_impute [B, D] as 0/1) from c; c = None is one row with nothing given."""
        if c is None:
            ref = like if like is not None else next(self.parameters())
            zeros = torch.zeros(1, self.data_dim, device=ref.device, dtype=torch.get_default_dtype())
            return zeros, torch.ones_like(zeros)
        x_given, given = c[..., : self.data_dim], c[..., self.data_dim :]
        return x_given, 1.0 - given

    def _prior_features(self, c: torch.Tensor | None) -> tuple[Distribution, list[torch.Tensor]]:
        x_given, to_impute = self._split(c)
        encoded = one_hot_columns(torch.where(to_impute > 0, torch.nan, x_given), self.column_sizes)
        return self.prior_net.features(torch.cat([encoded, to_impute], dim=-1))  # input [B, width + D]

    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        _, to_impute = self._split(c, x)
        missing = torch.isnan(x).to(to_impute.dtype)  # [B, D]
        inputs = torch.cat([one_hot_columns(x, self.column_sizes), to_impute.expand_as(missing), missing], dim=-1)
        return self.proposal(inputs)  # [B, latent_dim]

    def prior(self, c: torch.Tensor | None = None) -> Distribution:
        return self._prior_features(c)[0]

    def likelihood(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        _, skips = self._prior_features(c)
        _, to_impute = self._split(c)
        return self.head(self.decoder(z, skips), score=to_impute > 0)  # scores hidden entries only

    @torch.no_grad()
    def init_output_bias(self, x_mean: torch.Tensor) -> None:
        """Start the generative network at the data's marginal where the likelihood defines one (binary images)."""
        bias = self.head.marginal_bias(x_mean)
        if bias is not None:
            self.decoder.out[-1].bias.copy_(bias)

    @torch.no_grad()
    def impute(self, x: torch.Tensor, given: torch.Tensor, n: int = 10) -> torch.Tensor:
        """n imputations [n, B, D] of the entries not ``given``: z ~ p(z | x_{1-b}, b), each decoded to its most probable row."""
        c = make_condition(x, given)
        p, skips = self._prior_features(c)
        z = p.sample((n,))  # [n, B, latent_dim]
        decoded = self.head(self.decoder(z, skips)).mode  # [n, B, D]
        keep = given & ~torch.isnan(x)
        return torch.where(keep, x, decoded)  # [n, B, D]
