"""Bounds on log p(x | c) as plain functions of a model's log-weights.

Every bound returns :class:`BoundTerms` with per-example tensors, so a
trainer maximises ``terms.value`` and a report reads the same terms.

References: Kingma & Welling (2014) for the ELBO; Higgins et al. (2017) for
beta; Burda, Grosse & Salakhutdinov (2016) for L_k; Roeder, Wu & Duvenaud
(2017) for STL; Tucker, Lawson, Gu & Maddison (2018) for DReG.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

from .distributions import gaussian_kl
from .errors import ConfigError
from .models.base import LatentVariableModel, LogWeights

ESTIMATORS = ("reparam", "stl", "dreg")


@dataclass(frozen=True)
class BoundTerms:
    """A bound and its parts, per example.

    value          [B]     the bound (differentiable: maximise its mean)
    reconstruction [B]     E_q[log p(x | z, c)], averaged over the k samples
    kl             [B]     KL(q(z | x, c) || p(z | c)), analytic where torch has it, else Monte Carlo
    log_weights    [k, B]  log w for the samples drawn
    beta, k                the weight on KL and the number of samples
    """

    value: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    log_weights: torch.Tensor
    beta: float
    k: int

    def loss(self) -> torch.Tensor:
        """The scalar a trainer minimises: minus the batch mean of the bound."""
        return -self.value.mean()

    def summary(self) -> dict[str, float]:
        """Batch means of the terms, as floats, for logs and progress bars."""
        return {
            "bound": self.value.mean().item(),
            "reconstruction": self.reconstruction.mean().item(),
            "kl": self.kl.mean().item(),
            "beta": self.beta,
        }


def analytic_kl(q, p) -> torch.Tensor | None:
    """KL(q || p) in closed form, else None (e.g. a mixture prior).

    Diagonal Gaussians, the common case, take :func:`gaussian_kl` (a compiled
    graph traces it whole); any other pair takes torch's registered closed
    form, if it has one.
    """
    kl = gaussian_kl(q, p)
    if kl is not None:
        return kl
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def kl_term(lw: LogWeights, analytic: bool = True) -> torch.Tensor:
    """KL(q || p) per example [B]: closed form when torch registers one, else the mean of log q - log p."""
    kl = analytic_kl(lw.q, lw.p) if analytic else None
    return kl if kl is not None else (lw.log_qz - lw.log_pz).mean(0)


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    beta: float = 1.0,
    k: int = 1,
    analytic_kl: bool = True,
    x_in: torch.Tensor | None = None,
) -> BoundTerms:
    """beta-ELBO: E_q[log p(x | z, c)] - beta * KL(q(z | x, c) || p(z | c)), k samples for the first term.

    beta = 1 is the ELBO (Kingma & Welling 2014, eq. 10); beta != 1 is the
    beta-VAE objective (Higgins et al. 2017, eq. 4). ``x_in`` is the encoder's
    input when it differs from the scored x (denoising bounds).
    """
    _check_k(k)
    lw = model.log_weights(x, c, k=k, x_in=x_in)
    reconstruction = lw.log_px_z.mean(0)  # [B]
    kl = kl_term(lw, analytic_kl)  # [B]
    return BoundTerms(reconstruction - beta * kl, reconstruction, kl, lw.log_w, beta, k)


def iwae(
    model: LatentVariableModel,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    k: int = 50,
    estimator: str = "reparam",
    x_in: torch.Tensor | None = None,
) -> BoundTerms:
    """The importance-weighted bound L_k = E[log (1/k) sum_i w_i] (Burda et al. 2016, eq. 8).

    Gradient estimators (all give the same value, they differ in the gradient):
      reparam  plain reparameterisation gradient of L_k;
      stl      "sticking the landing": log q scored with stopped parameters
               (Roeder et al. 2017); unbiased for k = 1, biased for k > 1
               (Tucker et al. 2018, sec. 5);
      dreg     doubly reparameterised (Tucker et al. 2018, eq. 7): stopped
               log q and the encoder's path through z weighted by w~_i^2
               instead of w~_i; unbiased, lower variance as k grows.
    """
    _check_k(k)
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown gradient estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    lw = model.log_weights(x, c, k=k, x_in=x_in, detach_posterior=estimator != "reparam")
    log_w = lw.log_w  # [k, B]
    value = torch.logsumexp(log_w, dim=0) - math.log(k)  # [B]
    if estimator == "dreg" and lw.z.requires_grad:
        w_tilde = torch.softmax(log_w.detach(), dim=0)  # [k, B], normalised importance weights
        # d value / d z_i = w~_i d log w_i / d z_i; one more factor of w~_i gives DReG's encoder gradient.
        lw.z.register_hook(lambda grad: grad * w_tilde.unsqueeze(-1))
    reconstruction = lw.log_px_z.mean(0)
    return BoundTerms(value, reconstruction, kl_term(lw), log_w, 1.0, k)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"the number of importance samples k must be a positive integer, got {k!r}")


@torch.inference_mode()
def importance_sample(
    model: LatentVariableModel,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    k: int = 5000,
    k_chunk: int = 500,
    compile: bool = False,
    eager_fallback: bool = False,
) -> BoundTerms:
    """L_k with large k, drawn ``k_chunk`` samples at a time so memory stays bounded.

    ``value`` is the log-likelihood estimate log (1/k) sum_i w_i; the
    reconstruction is averaged over all k samples; ``log_weights`` keeps all
    k per example for :func:`bound_curve`. Every model's test log-likelihood
    is this function: never a per-model routine. With ``compile`` each
    chunk's log-weights and sums run as one torch.compile graph (the same
    random draws; equal up to rounding); ``eager_fallback`` makes a failed
    compile a warning and runs the chunks eagerly (``eval.compile = "auto"``).
    """
    _check_k(k)
    if k_chunk < 1:
        raise ConfigError(f"k_chunk must be a positive integer, got {k_chunk!r}")
    chunk = _compiled_chunk(eager_fallback) if compile else _chunk_log_weights
    log_w, reconstruction, mc_kl = [], 0.0, 0.0
    for start in range(0, k, k_chunk):
        chunk_log_w, chunk_reconstruction, chunk_mc_kl, kl = chunk(model, x, c, min(k_chunk, k - start))
        log_w.append(chunk_log_w)  # [k_chunk, B]
        reconstruction = reconstruction + chunk_reconstruction
        mc_kl = mc_kl + chunk_mc_kl
    if kl is None:  # no closed form (e.g. a mixture prior): the Monte-Carlo KL over all k samples
        kl = mc_kl / k
    log_w = torch.cat(log_w, dim=0)  # [k, B]
    value = torch.logsumexp(log_w, dim=0) - math.log(k)
    return BoundTerms(value, reconstruction / k, kl, log_w, 1.0, k)


def _chunk_log_weights(model: LatentVariableModel, x: torch.Tensor, c: torch.Tensor | None, k: int):
    """One chunk of :func:`importance_sample`: log w [k, B], the per-example sums of log p(x | z) and
    log q - log p [B], and the analytic KL(q || p) [B] (None when torch has no closed form)."""
    lw = model.log_weights(x, c, k=k)
    return lw.log_w, lw.log_px_z.sum(0), (lw.log_qz - lw.log_pz).sum(0), analytic_kl(lw.q, lw.p)


@functools.cache
def _compiled_chunk(eager_fallback: bool = False):
    """:func:`_chunk_log_weights` under torch.compile, built once per process (speed, issue 2)."""
    from .compiled import compiled

    return compiled(_chunk_log_weights, "eval.compile", fallback=eager_fallback)


def bound_curve(log_w: torch.Tensor, ks: Sequence[int]) -> dict[int, torch.Tensor]:
    """Per-example estimates of L_k for each k from one set of log-weights [K, B].

    The K samples are split into K // k disjoint groups of k; each group's
    log-mean-exp is an unbiased draw of L_k and their mean is the estimate
    (so L_K itself is the log-likelihood estimate, one group).
    """
    total = log_w.shape[0]
    curve = {}
    for k in ks:
        if k > total or k < 1:
            raise ConfigError(f"L_{k} needs 1 <= k <= {total} log-weights per example")
        groups = log_w[: (total // k) * k].reshape(total // k, k, -1)  # [K/k, k, B]
        curve[k] = (torch.logsumexp(groups, dim=1) - math.log(k)).mean(0)  # [B]
    return curve


# --------------------------------------------------------------------------- conditional VAE (issue 4)


def gsnn(model: LatentVariableModel, x: torch.Tensor, c: torch.Tensor | None = None, *, k: int = 1) -> BoundTerms:
    """The GSNN objective E_{p(z|c)}[log p(x | z, c)], z drawn from the prior network (Sohn et al. 2015, eq. 9).

    Training then draws z the way testing does. By Jensen it is a lower bound
    on log p(x | c) too (looser than the CVAE's); there is no KL term.
    """
    _check_k(k)
    z = model.prior(c).rsample((k,))  # [k, B, latent_dim]
    log_px_z = model.likelihood(z, c).log_prob(x)  # [k, B]
    value = log_px_z.mean(0)  # [B]
    return BoundTerms(value, value, torch.zeros_like(value), log_px_z, 0.0, k)


def hybrid_cvae_gsnn(
    model: LatentVariableModel,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    k: int = 1,
    x_in: torch.Tensor | None = None,
) -> BoundTerms:
    """alpha * L_CVAE + (1 - alpha) * L_GSNN (Sohn et al. 2015, eq. 10); alpha = 1 is the CVAE bound, 0 the GSNN.

    ``kl`` is the CVAE part's KL(q(z | x, c) || p(z | c)) and ``beta`` the
    weight it carries in the objective (alpha).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"the hybrid weight alpha must be in [0, 1], got {alpha}")
    cvae = elbo(model, x, c, k=k, x_in=x_in)
    prior_sampled = gsnn(model, x, c, k=k)
    value = alpha * cvae.value + (1.0 - alpha) * prior_sampled.value  # [B]
    reconstruction = alpha * cvae.reconstruction + (1.0 - alpha) * prior_sampled.reconstruction
    return BoundTerms(value, reconstruction, cvae.kl, cvae.log_weights, alpha, k)
