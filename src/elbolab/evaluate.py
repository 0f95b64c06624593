"""Test-time dissection of a bound, the same for every model.

For each test example: the ELBO with its reconstruction and KL terms, L_k
for several k, the log-likelihood estimate (L_k at the largest k, Burda et
al. 2016, sec. 5) and the gap log p(x) - ELBO; over the test set: the active
units of the latent space (Burda et al. 2016, sec. 5.2).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Independent
from tqdm import tqdm

from . import distributed
from .bounds import analytic_kl, bound_curve, importance_sample
from .compiled import should_compile
from .config import EvalConfig, Switch
from .errors import ConfigError, RunError
from .floats import flush_denormals
from .models import LatentVariableModel
from .runs import BEST, EVAL, load, read_config, read_eval, read_metrics, require_run, write_json
from .tasks import Batch, make_task, resolve_device


def mean_and_se(values: torch.Tensor) -> dict[str, float]:
    """Mean and its standard error (sample std / sqrt(n)) of per-example values."""
    values = values.double()
    n = values.numel()
    se = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": values.mean().item(), "se": se}


def active_units(posterior_means: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """A_u = Cov_x(E_q[z_u]) per latent dimension u; a unit is active when A_u > threshold.

    ``posterior_means`` is [N, latent_dim], E_q[z] for N examples (Burda et al. 2016, sec. 5.2).
    """
    if posterior_means.shape[-1] == 0:  # a model with no latent (the conditional NN baseline, issue 4)
        return 0, posterior_means.new_zeros(0, dtype=torch.float64)
    cov = posterior_means.double().var(dim=0, unbiased=True)  # [latent_dim]
    return int((cov > threshold).sum().item()), cov


def kl_per_dimension(q, p) -> torch.Tensor | None:
    """KL(q || p) per latent dimension [B, latent_dim] for factorised posteriors and priors, else None."""
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        return None
    kl = analytic_kl(q.base_dist, p.base_dist)
    return None if kl is None else kl.expand(q.base_dist.batch_shape)


@torch.inference_mode()
def dissect(
    model: LatentVariableModel,
    batches: Iterable[Batch],
    *,
    ks: Sequence[int] = (1, 5, 50, 500, 5000),
    k_chunk: int = 500,
    active_threshold: float = 0.01,
    seed: int = 0,
    progress: bool = False,
    total: int | None = None,
    compile: bool = False,
    eager_fallback: bool = False,
) -> dict[str, Any]:
    """Every term of the bound on the examples of ``batches``, as plain numbers (the content of eval.json).

    ``compile`` runs each chunk of log-weights through torch.compile (``eval.compile``; same draws, equal up
    to rounding); with ``eager_fallback`` a failed compile warns and the chunks run eagerly.
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks must be positive integers, got {ks}")
    model.eval()
    start = time.perf_counter()
    rank, world = distributed.rank(), distributed.world_size()
    parts: list[tuple[int, dict[str, torch.Tensor]]] = []  # (batch index, per-example values of that batch)
    with torch.random.fork_rng(devices=[]):
        for i, (x, c) in enumerate(tqdm(batches, total=total, desc="evaluate", disable=not progress or rank != 0, leave=False)):
            if i % world != rank:  # under torchrun, rank r takes batches r, r + N, ...
                continue
            torch.manual_seed(batch_seed(seed, i))  # each batch its own stream: the numbers do not depend on N
            parts.append((i, _dissect_batch(model, x, c, ks, k_chunk, compile, eager_fallback)))
    parts = sorted((p for rank_parts in distributed.all_gather(parts) for p in rank_parts), key=lambda p: p[0])
    rows = {name: [values[name] for _, values in parts] for name in (parts[0][1] if parts else {})}  # already on the CPU
    if not rows:
        raise ConfigError("no test examples to evaluate")
    means, kl_dims = rows.pop("posterior_mean"), rows.pop("kl_per_dim", [])
    per_example = {name: torch.cat(values) for name, values in rows.items()}
    elbo = per_example["reconstruction"] - per_example["kl"]
    log_likelihood = per_example[f"L_{ks[-1]}"]
    count, cov = active_units(torch.cat(means), active_threshold)
    result: dict[str, Any] = {
        "n_examples": int(elbo.numel()),
        "elbo": mean_and_se(elbo),
        "reconstruction": mean_and_se(per_example["reconstruction"]),
        "kl": mean_and_se(per_example["kl"]),
        "bound_curve": {str(k): mean_and_se(per_example[f"L_{k}"]) for k in ks},
        "log_likelihood": {"k": ks[-1], **mean_and_se(log_likelihood)},
        "gap": mean_and_se(log_likelihood - elbo),
        "active_units": {"count": count, "threshold": active_threshold, "cov": cov.tolist()},
        "seconds": time.perf_counter() - start,
    }
    if kl_dims:
        result["kl_per_dim"] = torch.cat(kl_dims).double().mean(0).tolist()
    return result


def batch_seed(seed: int, index: int) -> int:
    """The RNG seed of test batch ``index``: evaluation noise is a function of (seed, batch), not of the process layout."""
    return seed * 1_000_003 + index


def _dissect_batch(
    model: LatentVariableModel, x, c, ks: Sequence[int], k_chunk: int, compile: bool = False,
    eager_fallback: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-example terms of one test batch: L_k for every k, reconstruction, KL, E_q[z] and (if factorised) KL per dimension."""
    terms = importance_sample(model, x, c, k=ks[-1], k_chunk=k_chunk, compile=compile, eager_fallback=eager_fallback)
    out = {f"L_{k}": values for k, values in bound_curve(terms.log_weights, ks).items()}
    out["reconstruction"], out["kl"] = terms.reconstruction, terms.kl
    q, p = model.posterior(x, c), model.prior(c)
    out["posterior_mean"] = q.mean
    per_dim = kl_per_dimension(q, p)
    if per_dim is not None:
        out["kl_per_dim"] = per_dim
    return {name: value.cpu() for name, value in out.items()}


def evaluate(
    run_dir: str | Path,
    *,
    ks: Sequence[int] | None = None,
    k_chunk: int | None = None,
    batch_size: int | None = None,
    n_images: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
    which: str = "best",
    progress: bool = True,
    compile: Switch | None = None,
) -> dict[str, Any]:
    """Dissect the bound of a trained run on its test set, write ``eval.json`` and return it.

    Arguments left as None take the run's ``[eval]`` config. Memory stays
    bounded by ``batch_size`` examples x ``k_chunk`` samples per pass.
    ``compile`` runs the log-weights through torch.compile (``eval.compile``):
    True, False, or "auto" (compiled where it pays: :func:`elbolab.compiled.should_compile`).
    """
    run = require_run(run_dir)
    config = read_config(run)
    cfg: EvalConfig = config.eval
    ks = list(ks) if ks is not None else list(cfg.ks)
    k_chunk = cfg.k_chunk if k_chunk is None else k_chunk  # 0 is an error below, not "the default"
    batch_size = cfg.batch_size if batch_size is None else batch_size
    n = cfg.n_images if n_images is None else n_images
    seed = cfg.seed if seed is None else seed
    if batch_size < 1 or k_chunk < 1 or n < 0:
        raise ConfigError("batch_size and k_chunk must be >= 1 and n_images >= 0")
    flush_denormals()  # subnormal gradients and weights made CPU matmuls 4x slower (floats.py)
    dev = distributed.init(resolve_device(device))  # under torchrun: shard the test set over the ranks
    model = load(run, which=which, device=dev)
    task = make_task(config, dev)
    n_total = task.num_test_examples(n)
    switch = cfg.compile if compile is None else compile
    result = dissect(
        model,
        task.test_batches(batch_size, n),
        ks=ks,
        k_chunk=k_chunk,
        active_threshold=cfg.active_threshold,
        seed=seed,
        progress=progress,
        total=-(-n_total // batch_size),
        compile=should_compile(switch, dev, n_total * max(ks, default=0)),
        eager_fallback=switch == "auto",
    )
    result = {"run": str(run), "preset": config.preset, "task": config.task, "model": config.model.name,
              "bound": config.bound.name, "k_train": config.bound.k, "beta": config.bound.beta,
              "train_beta": training_beta(run, config.bound.gamma, task.selection_metric if which == "best" else None),
              **result}
    result["task_metrics"] = task.test_metrics(model, n)
    result = {**result, **_other_entries(run, result)}
    if distributed.is_main():
        write_json(run / EVAL, result)
    return result


def training_beta(run: Path, gamma: float = 0.0, selection_metric: str | None = None) -> dict[str, Any] | None:
    """The KL weight of the training bound at the last update of the evaluated epoch, from metrics.jsonl.

    ``beta`` (the config's) is the target; an annealed beta is below it until
    its warm-up ends, and Mult-VAE's stays at its cap (Liang et al. 2018: 0.2).
    The evaluated epoch is the one best.pt holds (the first with the highest
    ``selection_metric``, as the trainer keeps it) or the last. With
    ``gamma`` > 0 (RecVAE) the weight of user u is gamma * |x_u|. None for a
    run without metrics (or whose metrics predate the beta column).
    """
    records = read_metrics(run)
    if not records:
        return None
    index = len(records) - 1
    if selection_metric and (run / BEST).is_file():
        scores = [r.get(selection_metric, math.nan) for r in records]
        finite = [i for i, v in enumerate(scores) if isinstance(v, (int, float)) and math.isfinite(v)]
        index = max(finite, key=lambda i: (scores[i], -i)) if finite else index
    if "beta" not in records[index]:
        return None
    weight = "gamma * |x_u|" if gamma > 0 else "beta"
    return {"value": records[index]["beta"], "epoch": records[index]["epoch"], "weight": weight}


def _other_entries(run: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Entries of the run's eval.json that evaluate does not produce (e.g. ``inference_gaps``), kept on rewrite."""
    try:
        previous = read_eval(run) or {}
    except RunError:  # a damaged eval.json: evaluate replaces it, as before
        return {}
    own = set(result) | {"kl_per_dim"}  # kl_per_dim is evaluate's own even when this model has none
    return {key: value for key, value in previous.items() if key not in own}


def format_eval(result: dict[str, Any]) -> str:
    """A terminal table of one eval.json (nats; mean +- standard error over test examples)."""
    def row(name: str, stat: dict[str, float]) -> str:
        return f"  {name:<26} {stat['mean']:>11.3f}  +- {stat['se']:.3f}"

    lines = [f"{result.get('run', '')}: {result['n_examples']} test examples (nats)"]
    lines.append(row("ELBO", result["elbo"]))
    lines.append(row("  reconstruction", result["reconstruction"]))
    lines.append(row("  KL(q || p)", result["kl"]))
    trained = result.get("train_beta")
    if trained:  # the ELBO above weighs KL by 1; this is the weight training used
        name = "gamma (KL x gamma*|x_u|)" if trained["weight"] != "beta" else "beta (training)"
        lines.append(f"  {name:<26} {trained['value']:>11.4g}  (epoch {trained['epoch']}; ELBO above at beta = 1)")
    for k, stat in result["bound_curve"].items():
        lines.append(row(f"L_{k}", stat))
    ll = result["log_likelihood"]
    lines.append(row(f"log p(x) (k={ll['k']})", ll))
    lines.append(row("gap log p(x) - ELBO", result["gap"]))
    au = result["active_units"]
    lines.append(f"  {'active units':<26} {au['count']:>7d} / {len(au['cov'])}  (Cov_x E_q[z_u] > {au['threshold']})")
    for name, value in result.get("task_metrics", {}).items():
        if isinstance(value, dict) and "mean" in value:
            lines.append(row(name, value))
        else:
            lines.append(f"  {name:<26} {value}")
    lines.append(f"  {'seconds':<26} {result['seconds']:>11.1f}")
    return "\n".join(lines)
