"""The report's plots, each in two halves: a ``*_data`` function that turns a
run's records (metrics.jsonl, eval.json, the trained model) into plain numbers,
and a ``draw_*`` function that draws exactly those numbers with matplotlib.

Tests check the first half against the run's files and the second against the
first (the drawn line's points are the data's points); the report
(``report.py``) only wires them together. Figures are built on the Agg canvas
directly (no pyplot, no global backend switch), so drawing is safe inside any
program. Every axis that carries a bound or a term is in nats.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


def run_color(i: int) -> str:
    """The colour of the i-th run, the same in every plot of a report."""
    return RUN_COLORS[i % len(RUN_COLORS)]


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (inches; 100 dpi when saved)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if xlabel == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _nan(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


# --------------------------------------------------------------------------- training curves

# The terms of the training curves: name -> (train key, test keys tried in order, axis label).
CURVE_TERMS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "bound": ("train_bound", ("test_elbo", "valid_elbo", "test_bound", "valid_bound"), "bound (nats)"),
    "reconstruction": ("train_reconstruction", ("test_reconstruction", "valid_reconstruction"), "E_q[log p(x|z)] (nats)"),
    "kl": ("train_kl", ("test_kl", "valid_kl"), "KL(q || p) (nats)"),
    "beta": ("beta", (), "beta (weight on KL)"),
}


def training_curves_data(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-epoch series of the bound, its two terms and beta, train and test, from metrics.jsonl records.

    Returns ``{"epoch": [...], "step": [...], "terms": {name: {"train": [...], "test": [...], "test_key": key}}}``;
    a record without a key gives NaN there, a term with no test key has no ``test``.
    """
    terms: dict[str, dict[str, Any]] = {}
    for name, (train_key, test_keys, _) in CURVE_TERMS.items():
        series: dict[str, Any] = {"train": [_nan(r.get(train_key)) for r in metrics]}
        test_key = next((k for k in test_keys if any(k in r for r in metrics)), None)
        if test_key is not None:
            series["test"] = [_nan(r.get(test_key)) for r in metrics]
            series["test_key"] = test_key
        terms[name] = series
    return {
        "epoch": [int(r.get("epoch", i + 1)) for i, r in enumerate(metrics)],
        "step": [int(r.get("step", 0)) for r in metrics],
        "terms": terms,
    }


def updates_per_epoch(curves: Sequence[Mapping[str, Any]]) -> int | None:
    """The number of optimizer steps per epoch when every run's metrics agree on one, else None."""
    rates = set()
    for data in curves:
        epochs, steps = data["epoch"], data["step"]
        rates |= {(s1 - s0) // (e1 - e0) for e0, e1, s0, s1 in zip([0, *epochs], epochs, [0, *steps], steps) if e1 > e0}
    return rates.pop() if len(rates) == 1 and 0 not in rates else None


def curve_keys(curves: Mapping[str, Any]) -> set[str]:
    """The metrics.jsonl keys a training-curves plot already shows (so other plots skip them)."""
    return {s["test_key"] for s in curves["terms"].values() if "test_key" in s}


def draw_training_curves(runs: Sequence[tuple[str, Mapping[str, Any]]]):
    """Four panels (bound, reconstruction, KL, beta) over epochs; one colour per run, solid train, dashed test."""
    fig = new_figure(11, 6.5)
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, (_, _, ylabel)) in zip(axes, CURVE_TERMS.items()):
        for i, (label, data) in enumerate(runs):
            series = data["terms"][name]
            marker = "." if len(data["epoch"]) < 30 else None
            ax.plot(data["epoch"], series["train"], "-", color=run_color(i), label=f"{label} train", marker=marker)
            if "test" in series:
                ax.plot(data["epoch"], series["test"], "--", color=run_color(i), label=f"{label} test", marker=marker)
        _style(ax, name if name != "kl" else "KL", "epoch", ylabel)
        per_epoch = updates_per_epoch([data for _, data in runs])
        if per_epoch:
            ax.set_xlabel(f"epoch (1 epoch = {per_epoch:,} updates)")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].legend(handles, labels, fontsize=8)
    return fig


def metric_curves_data(metrics: Sequence[Mapping[str, Any]], skip: set[str] = frozenset()) -> dict[str, dict[str, list]]:
    """Every ``valid_*`` / ``test_*`` key of metrics.jsonl not in ``skip``: key -> {"epoch": [...], "value": [...]} (epochs that logged it)."""
    keys = list(dict.fromkeys(k for r in metrics for k in r if k.startswith(("valid_", "test_")) and k not in skip))
    out = {}
    for key in keys:
        rows = [(int(r.get("epoch", i + 1)), _nan(r[key])) for i, r in enumerate(metrics) if key in r]
        out[key] = {"epoch": [e for e, _ in rows], "value": [v for _, v in rows]}
    return out


def draw_metric_curves(runs: Sequence[tuple[str, Mapping[str, Mapping[str, list]]]]):
    """One small panel per metric key over epochs, runs overlaid."""
    keys = list(dict.fromkeys(k for _, data in runs for k in data))
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = new_figure(3.8 * cols, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, key in zip(axes, keys):
        for i, (label, data) in enumerate(runs):
            if key in data:
                ax.plot(data[key]["epoch"], data[key]["value"], "-", marker=".", color=run_color(i), label=label)
        _style(ax, key, "epoch", _metric_unit(key))
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    return fig


def _metric_unit(key: str) -> str:
    bare = key.split("_", 1)[-1]
    return "nats" if bare in {"elbo", "bound", "reconstruction", "kl", "log_likelihood", "nll"} else "value"


# --------------------------------------------------------------------------- rate-distortion


def rate_distortion_data(evals: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One point per evaluated run (Alemi et al. 2018, sec. 2): rate R = E_x KL(q(z|x) || p(z)), distortion D = -E_q[log p(x|z)].

    Both in nats per test example; -ELBO = D + R, so lines of equal ELBO have slope -1.
    """
    points = []
    for label, result in evals:
        points.append(
            {
                "label": label,
                "rate": result["kl"]["mean"],
                "rate_se": result["kl"]["se"],
                "distortion": -result["reconstruction"]["mean"],
                "distortion_se": result["reconstruction"]["se"],
                "elbo": result["elbo"]["mean"],
                "beta": result.get("beta"),
            }
        )
    return points


def draw_rate_distortion(points: Sequence[Mapping[str, Any]], colors: Sequence[str] | None = None):
    """The rate-distortion plane with iso-ELBO lines; runs that differ only in beta are joined in beta order (a sweep's curve)."""
    fig = new_figure(7.5, 5.5)
    ax = fig.subplots()
    colors = list(colors or [run_color(i) for i in range(len(points))])
    rates = np.array([p["rate"] for p in points])
    dists = np.array([p["distortion"] for p in points])
    lo_r, hi_r = 0.0, max(rates.max() * 1.25, 1.0)
    lo_d, hi_d = max(dists.min() - 0.25 * (np.ptp(dists) + 10), 0.0), dists.max() + 0.25 * (np.ptp(dists) + 10)
    # iso-ELBO lines: D + R = -ELBO; about six, at round values through the plotted window.
    step = _round_step((hi_d - lo_d + hi_r - lo_r) / 6)
    start = math.floor((lo_d + lo_r) / step) * step
    for c in np.arange(start, hi_d + hi_r + step, step):
        r = np.array([lo_r, hi_r])
        ax.plot(r, c - r, color="0.75", lw=0.8, zorder=0)
        x_text = min(max(c - hi_d, lo_r), hi_r)
        if lo_d <= c - x_text <= hi_d and x_text < hi_r * 0.9:
            ax.text(x_text, c - x_text, f" -ELBO = {c:g} nats", color="0.45", fontsize=7, rotation=-45, va="bottom",
                    rotation_mode="anchor", transform_rotates_text=True)
    betas = [p.get("beta") for p in points]
    if len(points) > 2 and None not in betas and len(set(betas)) == len(points):
        order = np.argsort(betas)
        ax.plot(rates[order], dists[order], "-", color="0.3", lw=1.2, zorder=1, label="sweep, by beta")
    for p, color in zip(points, colors):
        r = np.array([lo_r, hi_r])
        ax.plot(r, -p["elbo"] - r, ls=(0, (4, 4)), color=color, lw=0.9, alpha=0.6, zorder=1)  # this run's own iso-ELBO line
        ax.errorbar(p["rate"], p["distortion"], xerr=p["rate_se"], yerr=p["distortion_se"], fmt="o", ms=8, color=color, zorder=3,
                    label=f"{p['label']} (ELBO {p['elbo']:.2f})")
        beta = "" if p.get("beta") is None else f"  β={p['beta']:g}"
        ax.annotate(f"{p['label']}{beta}", (p["rate"], p["distortion"]), textcoords="offset points", xytext=(7, 5), fontsize=8)
    ax.set_xlim(lo_r, hi_r)
    ax.set_ylim(lo_d, hi_d)
    _style(ax, "rate-distortion plane (iso-ELBO lines D + R = -ELBO; dashed: through each run)", "rate R = KL(q(z|x) || p(z))  (nats)",
           "distortion D = -E_q[log p(x|z)]  (nats)")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _round_step(x: float) -> float:
    """A round number (1, 2 or 5 x 10^n) near ``x``."""
    exp = 10 ** math.floor(math.log10(x))
    return min((m * exp for m in (1, 2, 5, 10)), key=lambda s: abs(s - x))


# --------------------------------------------------------------------------- tightness


def tightness_data(result: Mapping[str, Any]) -> dict[str, Any]:
    """L_k against k, the log-likelihood estimate, and the gap log p(x) - ELBO split into what each step in k recovers.

    ``recovered`` lists (label, nats): first L_{k_1} - ELBO (Monte-Carlo L_1 vs the analytic-KL ELBO,
    about 0), then L_{k_i} - L_{k_{i-1}}; they add up to L_K - ELBO, the gap (Burda et al. 2016, Theorem 1:
    L_k rises with k towards log p(x)).
    """
    ks = sorted(result["bound_curve"], key=int)
    mean = [result["bound_curve"][k]["mean"] for k in ks]
    se = [result["bound_curve"][k]["se"] for k in ks]
    elbo = result["elbo"]["mean"]
    recovered, previous, prev_label = [], elbo, "ELBO"
    for k, m in zip(ks, mean):
        recovered.append((f"{prev_label} → L_{k}", m - previous))
        previous, prev_label = m, f"L_{k}"
    return {
        "k": [int(k) for k in ks],
        "mean": mean,
        "se": se,
        "elbo": elbo,
        "elbo_se": result["elbo"]["se"],
        "log_likelihood": dict(result["log_likelihood"]),
        "gap": result["gap"]["mean"],
        "recovered": recovered,
    }


def draw_tightness(runs: Sequence[tuple[str, Mapping[str, Any]]]):
    """Left: L_k vs k (log axis) with standard-error bars, ELBO and log p(x) estimate marked. Right: the gap, stacked by k."""
    fig = new_figure(12, 4.8)
    ax, bar = fig.subplots(1, 2, width_ratios=[1.2, 1])
    for i, (label, data) in enumerate(runs):
        color = run_color(i)
        ll = data["log_likelihood"]
        ax.errorbar(data["k"], data["mean"], yerr=data["se"], fmt="o-", color=color, capsize=4,
                    label=f"{label}: ELBO {data['elbo']:.2f}, log p(x) ≈ {ll['mean']:.2f} (k={ll['k']})")
        ax.axhline(ll["mean"], color=color, ls="--", lw=1)
        ax.axhline(data["elbo"], color=color, ls=":", lw=1)
    ax.plot([], [], "k--", lw=1, label="dashed: log p(x) estimate (largest k)")
    ax.plot([], [], "k:", lw=1, label="dotted: ELBO (analytic KL)")
    ax.set_xscale("log")
    all_k = sorted({k for _, data in runs for k in data["k"]})
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.minorticks_off()
    _style(ax, "bound L_k against importance samples k", "k (importance samples, log scale)", "L_k (nats)")
    ax.legend(fontsize=7)
    n_steps = max(len(data["recovered"]) for _, data in runs)
    cmap = _colormap("viridis", n_steps)
    xmax = max(max(data["gap"], 0) for _, data in runs)
    for row, (label, data) in enumerate(runs):
        left = 0.0
        for j, (step, value) in enumerate(data["recovered"]):
            bar.barh(row, value, height=0.6, left=left, color=cmap[j], edgecolor="white", label=step if row == 0 else None)
            if value > 0.07 * max(xmax, 1e-9):
                ink = "white" if sum(cmap[j][:3]) < 1.5 else "black"
                bar.text(left + value / 2, row, f"{value:.2f}", ha="center", va="center", fontsize=9, color=ink)
            left += value
        bar.text(left, row, f"  gap {data['gap']:.2f}", va="center", fontsize=9)
    bar.set_yticks(range(len(runs)), [label for label, _ in runs])
    bar.set_ylim(len(runs) - 0.4 + (0.6 if len(runs) == 1 else 0), -0.6 - (0.6 if len(runs) == 1 else 0))
    bar.set_xlim(min(0, min(min(v for _, v in d["recovered"]) for _, d in runs)), xmax * 1.3 + 1e-9)
    _style(bar, "gap log p(x) - ELBO: what each step in k recovers", "nats", "")
    bar.legend(fontsize=7, loc="lower right")
    return fig


def _colormap(name: str, n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps[name]
    return [cmap(0.15 + 0.7 * j / max(n - 1, 1)) for j in range(n)]


# --------------------------------------------------------------------------- inference gaps


def inference_gaps_data(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The inference gaps of Cremer et al. (2018, sec. 3) from eval.json's ``inference_gaps``, or None when absent.

    approximation gap = log p(x) - L[q*] (the best member of the variational family),
    amortization gap = L[q*] - L[q_phi] (what the encoder loses against per-example optimisation).
    """
    gaps = result.get("inference_gaps")
    if not gaps:
        return None
    return {
        "n_examples": gaps.get("n_examples"),
        "log_likelihood": gaps["log_likelihood"]["mean"],
        "elbo_optimized": gaps["elbo_optimized"]["mean"],
        "elbo_amortized": gaps["elbo_amortized"]["mean"],
        "approximation_gap": gaps["approximation_gap"]["mean"],
        "approximation_gap_se": gaps["approximation_gap"]["se"],
        "amortization_gap": gaps["amortization_gap"]["mean"],
        "amortization_gap_se": gaps["amortization_gap"]["se"],
    }


def draw_inference_gaps(runs: Sequence[tuple[str, Mapping[str, Any]]]):
    """One stacked bar per run: approximation gap (bottom) + amortization gap (top) = log p(x) - L[q_phi]."""
    fig = new_figure(max(5.0, 1.6 * len(runs) + 3), 4.5)
    ax = fig.subplots()
    x = np.arange(len(runs))
    approx = np.array([d["approximation_gap"] for _, d in runs])
    amort = np.array([d["amortization_gap"] for _, d in runs])
    ax.bar(x, approx, 0.55, yerr=[d["approximation_gap_se"] for _, d in runs], capsize=4, color="#4c72b0",
           label="approximation gap  log p(x) - L[q*]")
    ax.bar(x, amort, 0.55, bottom=approx, yerr=[d["amortization_gap_se"] for _, d in runs], capsize=4, color="#dd8452",
           label="amortization gap  L[q*] - L[q_φ]")
    for xi, a, b in zip(x, approx, amort):
        ax.text(xi, a / 2, f"{a:.2f}", ha="center", va="center", color="white", fontsize=9)
        ax.text(xi, a + b / 2, f"{b:.2f}", ha="center", va="center", color="white", fontsize=9)
        ax.text(xi, a + b, f"total {a + b:.2f}\n", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, [label for label, _ in runs])
    ax.set_ylim(0, max((approx + amort).max() * 1.25, 1e-3))
    _style(ax, "inference gaps (Cremer et al. 2018)", "", "log p(x) - L[q_φ]  (nats)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------- latent usage


def latent_usage_data(result: Mapping[str, Any]) -> dict[str, Any]:
    """KL per latent dimension and the active-unit statistic A_u = Cov_x(E_q[z_u]) (Burda et al. 2016, sec. 5.2), each sorted descending.

    ``*_dims`` give the latent index of each sorted entry; ``kl_sorted`` is None when eval.json has no ``kl_per_dim``.
    """
    au = result["active_units"]
    cov = np.asarray(au["cov"], dtype=float)
    cov_order = np.argsort(-cov, kind="stable")
    data: dict[str, Any] = {
        "cov_sorted": cov[cov_order].tolist(),
        "cov_dims": cov_order.tolist(),
        "threshold": au["threshold"],
        "count": au["count"],
        "kl_sorted": None,
        "kl_dims": None,
    }
    if result.get("kl_per_dim"):
        kl = np.asarray(result["kl_per_dim"], dtype=float)
        kl_order = np.argsort(-kl, kind="stable")
        data["kl_sorted"], data["kl_dims"] = kl[kl_order].tolist(), kl_order.tolist()
    return data


def draw_latent_usage(runs: Sequence[tuple[str, Mapping[str, Any]]]):
    """Left: KL per dimension, sorted. Right: A_u per dimension, sorted, log scale, the activity threshold drawn."""
    fig = new_figure(12, 4.5)
    ax_kl, ax_au = fig.subplots(1, 2)
    for i, (label, data) in enumerate(runs):
        color = run_color(i)
        if data["kl_sorted"] is not None:
            ranks = np.arange(1, len(data["kl_sorted"]) + 1)
            ax_kl.plot(ranks, data["kl_sorted"], "o-", ms=4, color=color, label=f"{label} (total {sum(data['kl_sorted']):.2f})")
        ranks = np.arange(1, len(data["cov_sorted"]) + 1)
        ax_au.plot(ranks, data["cov_sorted"], "o-", ms=4, color=color, label=f"{label}: {data['count']} active")
    threshold = runs[0][1]["threshold"]
    ax_au.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax_au.set_yscale("log")
    _style(ax_kl, "KL(q(z_u|x) || p(z_u)) per latent dimension", "dimensions, sorted by KL", "KL (nats)")
    _style(ax_au, "active units: A_u = Cov_x(E_q[z_u])", "dimensions, sorted by A_u", "A_u (variance of the posterior mean)")
    ax_kl.legend(fontsize=8)
    ax_au.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- images


def image_side(data_dim: int) -> int | None:
    """The side of a square image of ``data_dim`` pixels (28 for 784, 8 for 64), or None when it is not one."""
    side = math.isqrt(data_dim)
    return side if side * side == data_dim and side >= 4 else None


@dataclass
class ImagePanels:
    """What the image plots show, as arrays of shape [n, side, side] in [0, 1] (and the 2-D view's points)."""

    side: int
    inputs: np.ndarray  # [n, s, s] test images
    reconstructions: np.ndarray  # [n, s, s] mean of p(x | z = E_q[z | x])
    samples: np.ndarray  # [m, s, s] mean of p(x | z), z ~ p(z)
    traversal: np.ndarray  # [dims, steps, s, s] decoded along each traversed dimension
    traversal_dims: list[int]  # latent index of each traversal row (most active first)
    traversal_values: list[float]  # the values z_u takes along a row
    means_2d: np.ndarray  # [N, 2] posterior means projected to two axes
    projection: str  # how: "z_0, z_1" or "PCA (x% of variance)"
    axis_labels: tuple[str, str]
    labels: np.ndarray | None  # [N] class labels of the projected test images


def image_panels(
    run_dir: str | Path,
    *,
    n_show: int = 16,
    n_samples: int = 32,
    n_traverse: int = 5,
    steps: int = 9,
    n_scatter: int = 2000,
    seed: int = 0,
) -> ImagePanels | None:
    """Reconstructions, prior samples, traversals and the 2-D posterior view of an image run's trained model.

    None when the run's data is not square images or the model is conditional (its test batches carry c).
    Traversals start at the first test image's posterior mean and move one latent at a time over
    [-3, 3] (the prior's +-3 sd), along the dimensions with the largest A_u.
    """
    import torch

    from .runs import load, read_config
    from .tasks import make_task

    config = read_config(run_dir)
    model = load(run_dir)
    task = make_task(config, "cpu")
    batch = next(iter(task.test_batches(n_scatter, n_scatter)))
    x, c = batch
    side = image_side(x.shape[-1]) if x.ndim == 2 else None
    if side is None or c is not None:
        return None
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        means = model.posterior(x).mean  # [N, latent_dim]
        recon = model.likelihood(means[:n_show]).mean  # [n, D]
        samples = model.sample(n_samples)  # [m, D]
        cov = means.double().var(0, unbiased=True)  # [latent_dim], A_u as in evaluate.active_units
        dims = torch.argsort(cov, descending=True)[: min(n_traverse, means.shape[1])].tolist()
        values = torch.linspace(-3, 3, steps)
        z = means[:1].repeat(len(dims), steps, 1)  # [dims, steps, latent_dim]
        for row, u in enumerate(dims):
            z[row, :, u] = values
        traversal = model.likelihood(z).mean  # [dims, steps, D]
    labels = task.test_labels(x.shape[0]) if hasattr(task, "test_labels") else None
    means_2d, projection, axis_labels = project_2d(means.double().numpy())

    def square(t) -> np.ndarray:
        return np.clip(t.detach().cpu().double().numpy(), 0, 1).reshape(*t.shape[:-1], side, side)

    return ImagePanels(
        side=side,
        inputs=square(x[:n_show]),
        reconstructions=square(recon),
        samples=square(samples),
        traversal=square(traversal),
        traversal_dims=dims,
        traversal_values=values.tolist(),
        means_2d=means_2d,
        projection=projection,
        axis_labels=axis_labels,
        labels=None if labels is None else np.asarray(labels),
    )


def project_2d(means: np.ndarray) -> tuple[np.ndarray, str, tuple[str, str]]:
    """Posterior means [N, d] on two axes: the latents themselves when d <= 2, else their first two principal components."""
    n, d = means.shape
    if d <= 2:
        out = means if d == 2 else np.concatenate([means, np.zeros((n, 1))], axis=1)
        return out, "the latent coordinates", ("z_0", "z_1" if d == 2 else "(none)")
    centred = means - means.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = (s[:2] ** 2).sum() / max((s**2).sum(), 1e-300)
    return centred @ vt[:2].T, f"PCA, {100 * share:.0f}% of the variance", ("PC 1", "PC 2")


def tile(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """Images [n, s, s] as one mosaic [rows * (s + pad) - pad, cols * (s + pad) - pad]; the padding is NaN (drawn as a frame colour)."""
    n, s, _ = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (s + pad) - pad, cols * (s + pad) - pad), np.nan)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        out[r * (s + pad) : r * (s + pad) + s, q * (s + pad) : q * (s + pad) + s] = image
    return out


def _show(ax, mosaic: np.ndarray) -> None:
    """Pixel intensities in [0, 1] as ink on white (1 = black), padding in a light frame colour."""
    from matplotlib import colormaps

    cmap = colormaps["gray_r"].with_extremes(bad="#b0bec5")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _mosaic(ax, images: np.ndarray, cols: int, title: str) -> None:
    _show(ax, tile(images, cols))
    ax.set_title(title, fontsize=10)


def draw_reconstructions(panels: ImagePanels, cols: int = 8):
    """Rows of test inputs, each with the row of their reconstructions (the mean of p(x | z = E_q[z|x])) under it."""
    n = len(panels.inputs) // cols * cols or len(panels.inputs)
    cols = min(cols, n)
    pairs = []
    for start in range(0, n, cols):
        pairs += [panels.inputs[start : start + cols], panels.reconstructions[start : start + cols]]
    rows = len(pairs)
    fig = new_figure(0.6 * cols + 1.2, 0.6 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, 1, squeeze=False)).ravel()
    for r, (ax, images) in enumerate(zip(axes, pairs)):
        _show(ax, tile(images, cols))
        ax.set_ylabel("input x" if r % 2 == 0 else "reconstruction", rotation=0, ha="right", va="center", fontsize=8)
    axes[0].set_title("test inputs and reconstructions: mean of p(x | z = E_q[z|x])", fontsize=10)
    return fig


def draw_samples(panels: ImagePanels):
    """Means of p(x | z) for z drawn from the prior."""
    rows = -(-len(panels.samples) // 8)
    fig = new_figure(6, 0.7 * rows + 0.5)
    ax = fig.subplots()
    _mosaic(ax, panels.samples, 8, "samples: mean of p(x | z), z ~ p(z)")
    return fig


def draw_traversals(panels: ImagePanels, kl_per_dim: Sequence[float] | None = None):
    """One row per traversed latent dimension, decoded as z_u goes from -3 to 3, the others at the first input's posterior mean."""
    rows = len(panels.traversal_dims)
    fig = new_figure(1.0 + 0.75 * len(panels.traversal_values), 0.6 + 0.75 * rows)
    axes = np.atleast_1d(fig.subplots(rows, 1, squeeze=False)).ravel()
    for ax, images, u in zip(axes, panels.traversal, panels.traversal_dims):
        _show(ax, tile(images, len(images)))
        kl = f"\nKL {kl_per_dim[u]:.2f}" if kl_per_dim is not None and u < len(kl_per_dim) else ""
        ax.set_ylabel(f"z_{u}{kl}", rotation=0, ha="right", va="center", fontsize=8)
    values = panels.traversal_values
    axes[0].set_title(f"traversals: z_u from {values[0]:g} to {values[-1]:g}, most active dimensions first", fontsize=10)
    return fig


def draw_latent_2d(panels: ImagePanels):
    """Posterior means E_q[z | x] of test images on two axes, coloured by class label when the data has labels."""
    fig = new_figure(6.5, 5.5)
    ax = fig.subplots()
    pts = panels.means_2d
    if panels.labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.6, color="#1f77b4")
    else:
        from matplotlib import colormaps

        cmap = colormaps["tab10"]
        for j, label in enumerate(np.unique(panels.labels)):
            mask = panels.labels == label
            ax.scatter(pts[mask, 0], pts[mask, 1], s=5, alpha=0.7, color=cmap(j % 10), label=str(label))
        ax.legend(fontsize=8, markerscale=3, title="label", loc="best")
    _style(ax, f"posterior means of {len(pts)} test images ({panels.projection})", *panels.axis_labels)
    return fig
