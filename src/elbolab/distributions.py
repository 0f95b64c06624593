"""Likelihood heads p(x | z, c): decoder outputs -> a torch Distribution over x.

A head knows how many decoder outputs it needs per data dimension and turns
those outputs into a distribution whose ``log_prob(x)`` sums over the data
dimensions (event shape = the data shape). Heads are thin over
``torch.distributions``; the two densities written here by hand are the
Bernoulli-with-logits (measured faster than torch's, tested equal to it) and
the multinomial over logits (Mult-VAE's likelihood, for count vectors whose
total varies per row, which ``torch.distributions.Multinomial`` does not take).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal, constraints

from .errors import ConfigError
from .fastmath import bernoulli_log_prob

# Argument validation costs a measurable share of a small training step and
# every tensor here is produced by our own code; user data is checked once,
# on load (see data/), not on every log_prob.
Distribution.set_default_validate_args(False)


class BernoulliLogits(Distribution):
    """Factorised Bernoulli over the last dimension, parameterised by logits.

    log p(x) = sum_d [x_d * l_d - softplus(l_d)], which is torch's
    ``Independent(Bernoulli(logits=l), 1).log_prob`` in fewer passes over memory.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.boolean
    has_rsample = False

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mode(self) -> torch.Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # one log per group of pixels instead of one per pixel (fastmath)
            return bernoulli_log_prob(self.logits, x)
        # x * l is a bilinear term; softplus is the only transcendental pass.
        return (x * self.logits).sum(-1) - F.softplus(self.logits).sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        probs = torch.sigmoid(self.logits).expand(self._extended_shape(sample_shape))
        with torch.no_grad():
            return torch.bernoulli(probs)


class MultinomialLogits(Distribution):
    """Multinomial over the last dimension with a per-row total (Mult-VAE, Liang et al. 2018, eq. 2).

    log p(x) = log n! - sum_i log x_i! + sum_i x_i log pi_i,  pi = softmax(logits),
    n = sum_i x_i. The combinatorial term does not depend on the parameters;
    keeping it makes the reported reconstruction a proper log-likelihood.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.nonnegative_integer
    has_rsample = False

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.sparse_csr:  # collaborative filtering (issue 3): read only the clicked items
            from .sparse import multinomial_log_prob

            return multinomial_log_prob(self.logits, x)
        log_pi = torch.log_softmax(self.logits, dim=-1)
        n = x.sum(-1)
        log_coefficient = torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(-1)
        return log_coefficient + (x * log_pi).sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size(), total_count: int = 1) -> torch.Tensor:
        probs = self.probs.expand(self._extended_shape(sample_shape))
        flat = probs.reshape(-1, probs.shape[-1])
        with torch.no_grad():
            idx = torch.multinomial(flat, total_count, replacement=True)
            counts = torch.zeros_like(flat).scatter_add_(1, idx, torch.ones_like(idx, dtype=flat.dtype))
        return counts.reshape(probs.shape)


class LikelihoodHead(nn.Module):
    """Maps decoder outputs ``[..., out_features]`` to p(x | z) with event shape ``[data_dim]``."""

    outputs_per_dim: int = 1

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.data_dim = data_dim

    @property
    def out_features(self) -> int:
        return self.data_dim * self.outputs_per_dim

    def marginal_bias(self, x_mean: torch.Tensor) -> torch.Tensor | None:
        """Decoder output bias that makes p(x | z) the data's marginal when the rest is zero, if defined."""
        return None


class BernoulliHead(LikelihoodHead):
    """Binary data (binarized MNIST): decoder outputs are logits."""

    def marginal_bias(self, x_mean: torch.Tensor) -> torch.Tensor:
        p = x_mean.clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    def forward(self, params: torch.Tensor) -> Distribution:
        return BernoulliLogits(params)


class GaussianHead(LikelihoodHead):
    """Real data: decoder outputs are the mean; sigma fixed, or learned per dimension."""

    def __init__(self, data_dim: int, sigma: float = 1.0, learn_sigma: bool = False) -> None:
        super().__init__(data_dim)
        if sigma <= 0:
            raise ConfigError(f"Gaussian likelihood sigma must be > 0, got {sigma}")
        log_sigma = torch.full((data_dim,), math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def marginal_bias(self, x_mean: torch.Tensor) -> torch.Tensor:
        return x_mean

    def forward(self, params: torch.Tensor) -> Distribution:
        return Independent(Normal(params, self.log_sigma.exp()), 1)


class MultinomialHead(LikelihoodHead):
    """Count or click vectors (Mult-VAE): decoder outputs are item logits."""

    def marginal_bias(self, x_mean: torch.Tensor) -> torch.Tensor:
        return torch.log(x_mean.clamp_min(1e-8))

    def forward(self, params: torch.Tensor) -> Distribution:
        return MultinomialLogits(params)


class CategoricalHead(LikelihoodHead):
    """Each data dimension is one of ``num_classes`` labels (x holds integer labels)."""

    def __init__(self, data_dim: int, num_classes: int = 2) -> None:
        super().__init__(data_dim)
        if num_classes < 2:
            raise ConfigError(f"Categorical likelihood needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.outputs_per_dim = num_classes

    def forward(self, params: torch.Tensor) -> Distribution:
        logits = params.unflatten(-1, (self.data_dim, self.num_classes))  # [..., D, C]
        return Independent(Categorical(logits=logits), 1)


LIKELIHOODS: dict[str, type[LikelihoodHead]] = {
    "bernoulli": BernoulliHead,
    "gaussian": GaussianHead,
    "multinomial": MultinomialHead,
    "categorical": CategoricalHead,
}


def make_likelihood(name: str, data_dim: int, **options: object) -> LikelihoodHead:
    """Build the likelihood head called ``name`` (a key of ``LIKELIHOODS``)."""
    try:
        cls = LIKELIHOODS[name]
    except KeyError:
        raise ConfigError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}") from None
    return cls(data_dim, **options)


def diagonal_gaussian(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag(scale^2)) with event shape = the last dimension."""
    return Independent(Normal(loc, scale), 1)


def _gaussian_parts(d: Distribution) -> tuple[Normal, int] | None:
    """(the Normal, how many rightmost dims are its event) for a Normal or an Independent Normal, else None."""
    if isinstance(d, Normal):
        return d, 0
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal):
        return d.base_dist, d.reinterpreted_batch_ndims
    return None


def gaussian_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) between two diagonal Gaussians with the same event dims, else None.

    0.5 sum (s^2 + (m_q - m_p)^2 / s_p^2 - 1 - log s^2), s = s_q / s_p
    (Kingma & Welling 2014, appendix B; the same arithmetic as torch's
    registered Normal-Normal KL, so the numbers are torch's). Written here
    because ``torch.distributions.kl_divergence``'s dispatch breaks a
    ``torch.compile`` graph (a ``min`` over a generator), which split every
    compiled training step in three.
    """
    qs, ps = _gaussian_parts(q), _gaussian_parts(p)
    if qs is None or ps is None or qs[1] != ps[1]:
        return None
    (qn, event_dims), (pn, _) = qs, ps
    var_ratio = (qn.scale / pn.scale).pow(2)
    t1 = ((qn.loc - pn.loc) / pn.scale).pow(2)
    kl = 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    return kl.sum(tuple(range(-event_dims, 0))) if event_dims else kl


def detach_parameters(q: Distribution) -> Distribution:
    """The same diagonal Gaussian with its parameters cut from the graph.

    STL and DReG (Roeder et al. 2017; Tucker et al. 2018) evaluate log q(z) with
    stopped variational parameters so the only path to phi is through z.
    """
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        base = q.base_dist
        return Independent(Normal(base.loc.detach(), base.scale.detach()), q.reinterpreted_batch_ndims)
    raise ConfigError(
        f"the stl/dreg estimators need a diagonal Gaussian posterior, got {type(q).__name__}; use estimator='reparam'"
    )


# --------------------------------------------------------------------------- tabular columns (VAEAC, issue 5)


def one_hot_columns(x: torch.Tensor, column_sizes: list[int]) -> torch.Tensor:
    """Network input for a table row: real columns as they are, categorical codes one-hot; NaN -> zeros.

    ``column_sizes[j]`` is 0 for a real column and the number of categories K
    for a categorical one; the output width is sum(max(1, K)).
    """
    present = ~torch.isnan(x)  # [..., D]
    filled = torch.where(present, x, torch.zeros_like(x))  # [..., D]
    if not any(column_sizes):  # every column real (images): nothing to one-hot
        return filled
    parts = []
    for j, size in enumerate(column_sizes):
        if size == 0:
            parts.append(filled[..., j : j + 1])  # [..., 1]
        else:
            one_hot = F.one_hot(filled[..., j].long().clamp(0, size - 1), size).to(x.dtype)  # [..., K]
            parts.append(one_hot * present[..., j : j + 1].to(x.dtype))
    return torch.cat(parts, dim=-1)  # [..., sum(max(1, K))]


class MaskedBernoulliLogits(BernoulliLogits):
    """Factorised Bernoulli whose ``log_prob`` sums only the entries where ``score`` is true.

    VAEAC on binary images scores only the hidden pixels x_b (Ivanov et al.
    2019, eq. 4): the given ones are the condition, not a target.
    """

    def __init__(self, logits: torch.Tensor, score: torch.Tensor | None = None) -> None:
        super().__init__(logits)
        self.score = score  # [..., D] bool, broadcast against logits

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.score is None:
            return super().log_prob(x)
        per_pixel = x * self.logits - F.softplus(self.logits)  # [..., D]
        return torch.where(self.score, per_pixel, torch.zeros_like(per_pixel)).sum(-1)  # [...]


class MaskedBernoulliHead(BernoulliHead):
    """Binary images for VAEAC: decoder outputs are logits; ``score`` picks the pixels the likelihood counts."""

    def forward(self, params: torch.Tensor, score: torch.Tensor | None = None) -> MaskedBernoulliLogits:
        return MaskedBernoulliLogits(params, score)


class TabularLikelihood(Distribution):
    """A per-column product of Gaussians (real columns) and categoricals (categorical columns).

    ``log_prob(x)`` sums log p(x_j) over the columns where ``score`` is true
    and x_j is not NaN: VAEAC scores only entries that are hidden from the
    model but observed in the data (Ivanov et al. 2019, eq. 4 restricted to
    x_b; truly missing cells carry no target).
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, logits: list[torch.Tensor], column_sizes: list[int],
                 score: torch.Tensor | None = None) -> None:
        self.loc, self.scale, self.logits = loc, scale, logits  # [..., n_real], [..., n_real], [[..., K_j]]
        self.column_sizes = column_sizes
        self.real = [j for j, s in enumerate(column_sizes) if s == 0]
        self.categorical = [j for j, s in enumerate(column_sizes) if s > 0]
        self.score = score
        super().__init__(loc.shape[:-1], torch.Size([len(column_sizes)]), validate_args=False)

    def _columns(self, real: torch.Tensor, categorical: list[torch.Tensor]) -> torch.Tensor:
        """Per-column tensors back in column order: [..., D]."""
        parts: list[torch.Tensor | None] = [None] * len(self.column_sizes)
        for i, j in enumerate(self.real):
            parts[j] = real[..., i]
        for value, j in zip(categorical, self.categorical):
            parts[j] = value
        return torch.stack(parts, dim=-1)  # [..., D]

    def log_prob_columns(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_j) per column [..., D], 0 where x_j is NaN."""
        present = ~torch.isnan(x)  # [B, D]
        filled = torch.where(present, x, torch.zeros_like(x))
        real = Normal(self.loc, self.scale).log_prob(filled[..., self.real])  # [..., n_real]
        categorical = [
            torch.log_softmax(logits, -1).gather(-1, filled[..., j].long().expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
            for logits, j in zip(self.logits, self.categorical)
        ]  # each [...]
        columns = self._columns(real, categorical)  # [..., D]
        return torch.where(present, columns, torch.zeros_like(columns))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.log_prob_columns(x)  # [..., D]
        if self.score is not None:
            columns = torch.where(self.score, columns, torch.zeros_like(columns))
        return columns.sum(-1)  # [...]

    @property
    def mode(self) -> torch.Tensor:
        """The most probable row: the Gaussian means and the most probable category codes [..., D]."""
        return self._columns(self.loc, [logits.argmax(-1).to(self.loc.dtype) for logits in self.logits])

    @property
    def mean(self) -> torch.Tensor:
        # A category code has no mean; the decoded point is the mode (Gaussian means, most probable labels).
        return self.mode

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            real = Normal(self.loc, self.scale).sample(sample_shape)
            categorical = [Categorical(logits=logits).sample(sample_shape).to(self.loc.dtype) for logits in self.logits]
            return self._columns(real, categorical)


class TabularHead(LikelihoodHead):
    """p(x | z) over a table row: Gaussian for real columns (on standardised values), categorical for the rest.

    ``column_sizes[j]`` is 0 for a real column and K >= 2 for a categorical
    one. sigma is fixed, or (``learn_sigma``) a decoder output per entry,
    softplus + ``min_sigma``, as in the VAEAC code's Gaussian-categorical loss.
    """

    def __init__(self, data_dim: int, column_sizes: list[int], sigma: float = 1.0, learn_sigma: bool = True,
                 min_sigma: float = 1e-2) -> None:
        super().__init__(data_dim)
        if len(column_sizes) != data_dim:
            raise ConfigError(f"the tabular likelihood has {len(column_sizes)} column sizes for {data_dim} columns")
        if any(s == 1 or s < 0 for s in column_sizes):
            raise ConfigError(f"column sizes must be 0 (real) or >= 2 categories, got {column_sizes}")
        if sigma <= 0:
            raise ConfigError(f"Gaussian likelihood sigma must be > 0, got {sigma}")
        self.column_sizes = list(column_sizes)
        self.learn_sigma = learn_sigma
        self.sigma, self.min_sigma = sigma, min_sigma
        n_real = sum(1 for s in column_sizes if s == 0)
        self.n_real = n_real
        self._out = n_real * (2 if learn_sigma else 1) + sum(column_sizes)

    @property
    def out_features(self) -> int:
        return self._out

    def forward(self, params: torch.Tensor, score: torch.Tensor | None = None) -> TabularLikelihood:
        """``params`` [..., out_features] = [means | raw sigmas | logits of each categorical column]."""
        n = self.n_real
        loc = params[..., :n]  # [..., n_real]
        offset = n
        if self.learn_sigma:
            scale = F.softplus(params[..., n : 2 * n]) + self.min_sigma  # [..., n_real]
            offset = 2 * n
        else:
            scale = torch.full_like(loc, self.sigma)
        logits = []
        for size in self.column_sizes:
            if size > 0:
                logits.append(params[..., offset : offset + size])  # [..., K]
                offset += size
        return TabularLikelihood(loc, scale, logits, self.column_sizes, score)
# --------------------------------------------------------------------------- collaborative filtering (issue 3)


class PointMass(Distribution):
    """q(z | x) = delta(z - loc): a deterministic encoder (Mult-DAE, Liang et al. 2018, sec. 2.3).

    ``rsample`` returns loc (the gradient flows through it) and ``log_prob``
    is 0 on the support, so log w = log p(x | z) + log p(z) and the
    Monte-Carlo "KL" is -log p(z); with beta = 0 the ELBO is the
    denoising autoencoder's multinomial log-likelihood.
    """

    arg_constraints = {"loc": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc: torch.Tensor) -> None:
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.loc)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.loc.expand(self._extended_shape(sample_shape))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
