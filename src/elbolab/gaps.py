"""Amortized inference, measured: the approximation gap and the amortization gap.

The encoder is amortized inference: one network predicts q(z | x, c) for
every x instead of each data point getting its own variational parameters.
With the decoder frozen, Cremer, Li & Duvenaud ("Inference Suboptimality in
Variational Autoencoders", ICML 2018, sec. 3 and Table 1) split the inference
gap log p(x) - L[q_phi] into

    approximation gap = log p(x) - L[q*]       (the family of q is too poor)
    amortization gap  = L[q*]    - L[q_phi]    (the encoder misses the best member)

where L[q_phi] is the ELBO of the encoder's q(z | x, c) and L[q*] the ELBO of
the best member of the same family for that one x, found by optimizing each
data point's own parameters. Here:

- L[q*]: each point's diagonal-Gaussian (loc, log scale) start at the
  encoder's output and are optimized by Adam, all points as one batched
  tensor (one optimizer, not a loop over points), on the core ``elbo`` with
  ``samples_per_step`` reparameterised samples (analytic KL). Stopping rule
  (Cremer et al.'s, with a tolerance): every ``window`` steps take the mean
  ELBO over the points and those steps; a window that beats the best so far
  by less than ``tol`` nats is a strike; stop after ``patience`` strikes in a
  row, or at ``max_steps``. The steps used and whether the rule fired are
  reported.
- Both ELBOs: the core ``elbo`` (beta = 1, analytic KL) averaged over
  ``elbo_samples`` samples per point (1,000 by default), with its Monte-Carlo
  standard error from batch means over the sample chunks.
- log p(x): the core ``importance_sample`` (L_k, k = 5,000 by default, in
  chunks as in ``evaluate``), run with two proposals, the encoder's q_phi
  (what ``evaluate`` reports) and the optimized q*. Both are stochastic
  lower bounds on log p(x) (Burda et al. 2016, Theorem 1); the one with the
  higher mean over the points is kept, for all points alike (a per-point
  maximum of two noisy estimates would be biased upward).

Coverage: every model whose posterior is a factorised Gaussian,
``Independent(Normal)`` — the VAE, beta-VAE and IWAE (one model, different
bounds; the gaps are of the beta = 1 ELBO whatever the training bound), the
DVAE (the encoder and the likelihood both see the clean x: the denoising
corruption is part of training, not of the model), and conditional models
(CVAE, VAEAC, ...) with their condition c held fixed: c is passed through to
``posterior``, ``prior`` and ``likelihood`` unchanged. Not covered, with a
clear :class:`UnsupportedModelError`: a model with no latent variable (not a
``LatentVariableModel``, or a posterior over 0 dimensions such as a
deterministic baseline with ``latent_dim = 0``), and any posterior that is not a diagonal Gaussian
(full-covariance, mixture, flow, discrete): the optimal member of another
family needs that family's own local parameters, which this module does not
know how to build.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution, Independent, Normal

from .bounds import elbo, importance_sample
from .errors import ConfigError, ElbolabError, RunError, TrainingError
from .evaluate import mean_and_se
from .models import LatentVariableModel
from .runs import EVAL, load, read_config, read_eval, require_run, write_json
from .tasks import make_task, resolve_device

Condition = Any  # None, a tensor [B, ...], or a tuple / list of such tensors

GAPS_KEY = "inference_gaps"  # the key of eval.json this module writes


class UnsupportedModelError(ElbolabError):
    """The model has no latent variable, or its posterior is not a factorised Gaussian."""


# --------------------------------------------------------------------------- settings and result


@dataclass(frozen=True)
class LocalOptimization:
    """How L[q*] is found: Adam on each point's (loc, log scale), and when to stop."""

    lr: float = 1e-3  # Cremer et al.'s local-optimization learning rate
    samples_per_step: int = 10  # reparameterised z per point per step (gradient noise)
    max_steps: int = 20000
    window: int = 100  # steps per convergence check (Cremer et al.: 100)
    tol: float = 0.01  # nats: a window improving the best window mean ELBO by less is a strike
    patience: int = 5  # strikes in a row that stop the optimization

    def check(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"the local optimizer's learning rate must be > 0, got {self.lr}")
        for name in ("samples_per_step", "max_steps", "window", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} of the local optimization must be >= 1, got {getattr(self, name)}")
        if self.tol < 0:
            raise ConfigError(f"the stopping tolerance must be >= 0 nats, got {self.tol}")


@dataclass(frozen=True)
class InferenceGaps:
    """Per-point estimates [N] (float64, on the CPU) and how they were made.

    ``log_likelihood`` is ``log_likelihood_amortized`` (L_k with q_phi as the
    proposal) or ``log_likelihood_optimized`` (with q*), whichever has the
    higher mean.
    ``trace`` holds the mean ELBO of each convergence window of the optimization.
    """

    elbo_amortized: torch.Tensor
    elbo_optimized: torch.Tensor
    log_likelihood: torch.Tensor
    log_likelihood_amortized: torch.Tensor
    log_likelihood_optimized: torch.Tensor
    k: int
    optimizer: dict[str, Any]
    seconds: float
    trace: list[float] = field(default_factory=list)

    @property
    def approximation_gap(self) -> torch.Tensor:
        """log p(x) - L[q*] per point (Cremer et al. 2018, Table 1)."""
        return self.log_likelihood - self.elbo_optimized

    @property
    def amortization_gap(self) -> torch.Tensor:
        """L[q*] - L[q_phi] per point (Cremer et al. 2018, Table 1)."""
        return self.elbo_optimized - self.elbo_amortized

    def summary(self) -> dict[str, Any]:
        """Means and standard errors over points: the ``inference_gaps`` entry of eval.json."""
        return {
            "n_examples": int(self.elbo_amortized.numel()),
            "elbo_amortized": mean_and_se(self.elbo_amortized),
            "elbo_optimized": mean_and_se(self.elbo_optimized),
            "log_likelihood": {"k": self.k, **mean_and_se(self.log_likelihood)},
            "approximation_gap": mean_and_se(self.approximation_gap),
            "amortization_gap": mean_and_se(self.amortization_gap),
            "optimizer": {
                **self.optimizer,
                "log_likelihood_by_proposal": {
                    "amortized": self.log_likelihood_amortized.mean().item(),
                    "optimized": self.log_likelihood_optimized.mean().item(),
                },
            },
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- the local posterior


class LocalPosterior(LatentVariableModel):
    """``model`` with q(z | x, c) replaced by given per-point diagonal Gaussians.

    The prior and the likelihood are the model's own (frozen decoder), so the
    core bounds score q* exactly as they score the encoder's q_phi.
    """

    def __init__(self, model: LatentVariableModel, loc: torch.Tensor, log_scale: torch.Tensor, event_ndims: int = 1):
        super().__init__()
        self.model = model
        self.latent_dim = getattr(model, "latent_dim", loc.shape[-1])
        self.loc, self.log_scale, self.event_ndims = loc, log_scale, event_ndims

    def posterior(self, x: torch.Tensor, c: Condition = None) -> Distribution:
        if x.shape[0] != self.loc.shape[0]:
            raise ConfigError(f"local posterior holds {self.loc.shape[0]} points but got a batch of {x.shape[0]}")
        return Independent(Normal(self.loc, self.log_scale.exp()), self.event_ndims)  # [B] x [latent_dim]

    def prior(self, c: Condition = None) -> Distribution:
        return self.model.prior(c)

    def likelihood(self, z: torch.Tensor, c: Condition = None) -> Distribution:
        return self.model.likelihood(z, c)


def gaussian_parameters(model: Any, x: torch.Tensor, c: Condition = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The encoder's (loc, log scale) for x, each [B, latent_dim], and the event ndims; or a clear error."""
    name = type(model).__name__
    if not isinstance(model, LatentVariableModel):
        raise UnsupportedModelError(
            f"{name} is not a latent variable model (no q(z | x, c)): there is no inference gap to split"
        )
    with torch.no_grad():
        q = model.posterior(x, c)
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
        raise UnsupportedModelError(
            f"{name}'s posterior is {_describe(q)}, not a factorised Gaussian Independent(Normal); inference gaps "
            "cover diagonal-Gaussian posteriors only (the optimal member of another family needs its own local parameters)"
        )
    if tuple(q.batch_shape) != (x.shape[0],):
        raise UnsupportedModelError(
            f"{name}'s posterior has batch shape {tuple(q.batch_shape)}; inference gaps need one q per point, [{x.shape[0]}]"
        )
    if q.event_shape.numel() == 0:  # e.g. the CVAE family's deterministic NN baseline (latent_dim 0)
        raise UnsupportedModelError(
            f"{name} has no latent variable (its posterior is over 0 dimensions): there is no inference gap to split"
        )
    loc, scale = torch.broadcast_tensors(q.base_dist.loc, q.base_dist.scale)  # [B, latent_dim]
    return loc.detach().clone(), scale.detach().log(), q.reinterpreted_batch_ndims


def _describe(q: Distribution) -> str:
    if isinstance(q, Independent):
        return f"Independent({type(q.base_dist).__name__})"
    return type(q).__name__


# --------------------------------------------------------------------------- helpers over points


def _take(c: Condition, rows: slice) -> Condition:
    """The rows of a condition (None, a tensor, or a tuple / list of tensors)."""
    if c is None:
        return None
    if isinstance(c, (tuple, list)):
        return type(c)(_take(part, rows) for part in c)
    return c[rows]


def _concat(parts: list[Condition]) -> Condition:
    """Concatenate conditions of several batches along the point dimension."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    return torch.cat(parts)


def _slices(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _over_points(
    fn: Callable[[slice, torch.Tensor, Condition], torch.Tensor], x: torch.Tensor, c: Condition, batch_size: int
) -> torch.Tensor:
    """``fn(rows, x[rows], c[rows])`` for batches of points, concatenated along the points [..., N]."""
    return torch.cat([fn(rows, x[rows], _take(c, rows)) for rows in _slices(x.shape[0], batch_size)], dim=-1)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the model's own parameters (the decoder stays fixed); restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


@torch.inference_mode()
def _elbo_chunks(model: LatentVariableModel, x: torch.Tensor, c: Condition, n_chunks: int, chunk: int) -> torch.Tensor:
    """The core ELBO (beta = 1, analytic KL) from ``chunk`` samples, ``n_chunks`` times: [n_chunks, B]."""
    return torch.stack([elbo(model, x, c, k=chunk).value for _ in range(n_chunks)])


def _optimize_local(
    model: LatentVariableModel,
    x: torch.Tensor,
    c: Condition,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    event_ndims: int,
    settings: LocalOptimization,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, int, bool, list[float]]:
    """Adam on all points' (loc, log scale) at once, maximising the sum of their ELBOs; the stopping rule of the module docstring."""
    loc = loc.clone().requires_grad_(True)  # [N, latent_dim]
    log_scale = log_scale.clone().requires_grad_(True)  # [N, latent_dim]
    optimizer = torch.optim.Adam([loc, log_scale], lr=settings.lr)
    n = x.shape[0]
    best, strikes, trace, converged = -math.inf, 0, [], False
    window_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    step = 0
    with torch.enable_grad():
        for step in range(1, settings.max_steps + 1):
            optimizer.zero_grad(set_to_none=True)
            for rows in _slices(n, batch_size):  # points are independent: summed gradients are exact
                local = LocalPosterior(model, loc[rows], log_scale[rows], event_ndims)
                value = elbo(local, x[rows], _take(c, rows), k=settings.samples_per_step).value  # [b]
                (-value.sum()).backward()
                window_sum += value.detach().double().sum()
            optimizer.step()
            if step % settings.window == 0:
                mean = window_sum.item() / (settings.window * n)
                if not math.isfinite(mean):
                    raise TrainingError(f"the local optimization diverged (mean ELBO {mean} at step {step}); lower --lr")
                trace.append(mean)
                strikes = strikes + 1 if mean < best + settings.tol else 0
                best = max(best, mean)
                window_sum.zero_()
                if strikes >= settings.patience:
                    converged = True
                    break
    return loc.detach(), log_scale.detach(), step, converged, trace


# --------------------------------------------------------------------------- the analysis


def inference_gaps(
    model: LatentVariableModel,
    x: torch.Tensor,
    c: Condition = None,
    *,
    k: int = 5000,
    k_chunk: int = 250,
    elbo_samples: int = 1000,
    elbo_chunk: int = 100,
    optimization: LocalOptimization | None = None,
    batch_size: int = 100,
    seed: int = 0,
) -> InferenceGaps:
    """The amortized ELBO, the optimal ELBO in the same family, and log p(x) of the points x (with condition c).

    The decoder (prior and likelihood) is frozen throughout; see the module
    docstring for the optimization, its stopping rule and the estimators.
    ``batch_size`` points and ``k_chunk`` (or ``elbo_chunk``) samples per
    pass bound the memory. The same seed gives the same numbers; the
    caller's random state is left untouched.
    """
    settings = optimization or LocalOptimization()
    settings.check()
    if elbo_chunk < 1 or elbo_samples < 2 or batch_size < 1:
        raise ConfigError(
            f"need elbo_samples >= 2, elbo_chunk >= 1 and batch_size >= 1, got {elbo_samples}, {elbo_chunk}, {batch_size}"
        )
    # At least two chunks of equal size, so the Monte-Carlo error has a batch-means estimate.
    n_chunks = max(2, elbo_samples // elbo_chunk)
    elbo_chunk = elbo_samples // n_chunks
    if x.shape[0] < 1:
        raise ConfigError("inference gaps need at least one data point")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), frozen(model):
        torch.manual_seed(seed)
        parts = [gaussian_parameters(model, x[rows], _take(c, rows)) for rows in _slices(x.shape[0], batch_size)]
        loc = torch.cat([part[0] for part in parts])  # [N, latent_dim]
        log_scale = torch.cat([part[1] for part in parts])  # [N, latent_dim]
        event_ndims = parts[0][2]
        # (1) the amortized ELBO L[q_phi] and (3a) log p(x) with q_phi as the proposal, as evaluate does
        chunks_amortized = _over_points(
            lambda rows, xb, cb: _elbo_chunks(model, xb, cb, n_chunks, elbo_chunk), x, c, batch_size
        )  # [chunks, N]
        ll_amortized = _over_points(
            lambda rows, xb, cb: importance_sample(model, xb, cb, k=k, k_chunk=k_chunk).value, x, c, batch_size
        )
        # (2) the optimal ELBO L[q*]: each point's own Gaussian, initialised at the encoder's output
        loc_star, log_scale_star, steps, converged, trace = _optimize_local(
            model, x, c, loc, log_scale, event_ndims, settings, batch_size
        )

        def local(rows: slice) -> LocalPosterior:
            return LocalPosterior(model, loc_star[rows], log_scale_star[rows], event_ndims)

        chunks_optimized = _over_points(
            lambda rows, xb, cb: _elbo_chunks(local(rows), xb, cb, n_chunks, elbo_chunk), x, c, batch_size
        )
        # (3b) log p(x) with q* as the proposal
        ll_optimized = _over_points(
            lambda rows, xb, cb: importance_sample(local(rows), xb, cb, k=k, k_chunk=k_chunk).value, x, c, batch_size
        )
    # One proposal for all points, the one whose mean estimate is tighter: chosen once per call, so the
    # choice adds no per-point selection bias (a per-point max of two noisy estimates would be biased up).
    use_optimized = bool(ll_optimized.double().mean() >= ll_amortized.double().mean())
    optimizer = {
        "method": "adam",
        "init": "encoder",
        "lr": settings.lr,
        "samples_per_step": settings.samples_per_step,
        "max_steps": settings.max_steps,
        "window": settings.window,
        "tol": settings.tol,
        "patience": settings.patience,
        "steps": steps,
        "converged": converged,
        "elbo_samples": n_chunks * elbo_chunk,
        # Monte-Carlo standard error of each mean ELBO over the points (batch means over the sample chunks)
        "elbo_mc_se": {
            "amortized": _mc_se_of_mean(chunks_amortized),
            "optimized": _mc_se_of_mean(chunks_optimized),
        },
        "log_likelihood_proposal": "optimized" if use_optimized else "amortized",
        "seed": seed,
    }
    return InferenceGaps(
        elbo_amortized=chunks_amortized.double().mean(0).cpu(),
        elbo_optimized=chunks_optimized.double().mean(0).cpu(),
        log_likelihood=(ll_optimized if use_optimized else ll_amortized).double().cpu(),
        log_likelihood_amortized=ll_amortized.double().cpu(),
        log_likelihood_optimized=ll_optimized.double().cpu(),
        k=k,
        optimizer=optimizer,
        seconds=time.perf_counter() - start,
        trace=trace,
    )


def _mc_se_of_mean(chunks: torch.Tensor) -> float:
    """Monte-Carlo standard error of the mean over points of per-point chunk averages [chunks, N] (chunks >= 2)."""
    n_chunks = chunks.shape[0]
    per_point_var = chunks.double().var(dim=0, unbiased=True) / n_chunks  # [N]
    return math.sqrt(per_point_var.sum().item()) / chunks.shape[1]


# --------------------------------------------------------------------------- a trained run


def analyze_gaps(
    run_dir: str | Path,
    *,
    n_points: int = 300,
    optimization: LocalOptimization | None = None,
    k: int = 5000,
    k_chunk: int = 250,
    elbo_samples: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    device: str = "cpu",
    which: str = "best",
) -> dict[str, Any]:
    """The inference gaps of a trained run on its first ``n_points`` test points, stored in eval.json.

    The points come from the run's own Task (so a conditional task supplies
    its c); the result is written atomically under ``"inference_gaps"``,
    keeping every other key of the run's eval.json (a run without one gets
    one with just this key). Returns that entry.
    """
    run = require_run(run_dir)
    if n_points < 1:
        raise ConfigError(f"--n-points must be >= 1, got {n_points}")
    try:
        previous = read_eval(run) or {}
    except RunError:  # damaged: do not overwrite what the user has
        raise RunError(f"{run / EVAL} is not valid JSON; repair or delete it, then run the analysis again") from None
    dev = resolve_device(device)
    model = load(run, which=which, device=dev)
    task = make_task(read_config(run), dev)
    batches = list(task.test_batches(batch_size, n_points))
    x = torch.cat([xb for xb, _ in batches])
    c = _concat([cb for _, cb in batches])
    gaps = inference_gaps(
        model, x, c, k=k, k_chunk=k_chunk, elbo_samples=elbo_samples, optimization=optimization,
        batch_size=batch_size, seed=seed,
    )
    result = gaps.summary()
    write_json(run / EVAL, {**previous, GAPS_KEY: result})
    return result


def format_gaps(result: dict[str, Any], title: str = "") -> str:
    """A terminal table of one ``inference_gaps`` entry (nats; mean +- standard error over points)."""

    def row(name: str, stat: dict[str, float]) -> str:
        return f"  {name:<30} {stat['mean']:>11.3f}  +- {stat['se']:.3f}"

    opt = result["optimizer"]
    ll = result["log_likelihood"]
    stopped = "stopping rule fired" if opt["converged"] else "max steps reached"
    lines = [f"{title + ': ' if title else ''}inference gaps on {result['n_examples']} test points (nats)"]
    lines.append(row(f"log p(x) (k={ll['k']})", ll))
    lines.append(row("L[q*] optimized ELBO", result["elbo_optimized"]))
    lines.append(row("L[q_phi] amortized ELBO", result["elbo_amortized"]))
    lines.append(row("approximation gap", result["approximation_gap"]))
    lines.append(row("amortization gap", result["amortization_gap"]))
    mc = opt["elbo_mc_se"]
    lines.append(
        f"  {'local optimization':<30} {opt['steps']} steps ({stopped}), Adam lr {opt['lr']}, "
        f"{opt['samples_per_step']} z per point per step"
    )
    lines.append(
        f"  {'ELBO estimates':<30} {opt['elbo_samples']} z per point; Monte-Carlo error of the means "
        f"{mc['amortized']:.3f} (q_phi), {mc['optimized']:.3f} (q*)"
    )
    lines.append(f"  {'log p(x) proposal':<30} {opt['log_likelihood_proposal']} (the tighter of q_phi and q*)")
    lines.append(f"  {'seconds':<30} {result['seconds']:>11.1f}")
    return "\n".join(lines)
