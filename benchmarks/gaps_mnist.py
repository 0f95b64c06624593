"""Inference gaps of the MNIST VAE, IWAE k=5 and IWAE k=50 runs of the core benchmark,
next to Cremer, Li & Duvenaud (2018), who find that on MNIST the amortization
gap dominates the approximation gap for a factorised-Gaussian (FFG) q.

Each run of ``benchmarks/quality_mnist.py`` whose training is over (its last
epoch is in metrics.jsonl, or its eval.json exists) is copied from --source
into --out first (the source is never written; the gaps need only the final
weights, not the run's own evaluation), then
``elbolab.analyze_gaps`` runs on its first --n-points test images and stores
the result in the copy's eval.json under "inference_gaps".

    OMP_NUM_THREADS=1 python benchmarks/gaps_mnist.py --source /work/main/benchmarks/runs/quality \\
        --out benchmarks/runs/gaps --runs vae-mnist --n-points 300   # one process per run, in parallel
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

import elbolab
from elbolab.gaps import GAPS_KEY, LocalOptimization
from elbolab.runs import CHECKPOINT, EVAL, read_config, read_eval, read_metrics

RUNS = ("vae-mnist", "iwae-mnist-k5", "iwae-mnist-k50")
# Cremer et al. (2018), Table 2, MNIST, FFG-trained model evaluated with an FFG q (nats).
PAPER = "Cremer et al. 2018 (MNIST, FFG)"


def trained(run: Path) -> bool:
    """Training is over: the run has its eval.json, or metrics.jsonl has reached the config's last epoch."""
    if (run / EVAL).is_file():
        return True
    metrics = read_metrics(run)
    return bool(metrics) and metrics[-1]["epoch"] >= read_config(run).train.epochs


def copy_run(source: Path, out: Path) -> Path:
    """A private copy of a run whose training is over (the gaps need only its final weights); reused if present."""
    if out.exists():
        return out
    if not trained(source):
        raise SystemExit(f"{source} is still training; wait for it or pass --runs without it")
    shutil.copytree(source, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("/work/main/benchmarks/runs/quality"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/gaps"))
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--n-points", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tol", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--samples-per-step", type=int, default=10)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--elbo-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="print the table from the stored results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows, run_dirs = [], {}
    for name in args.runs.split(","):
        run = run_dirs[name] = args.out / name
        if not args.table_only:
            copy_run(args.source / name, run)
            start = time.perf_counter()
            optimization = LocalOptimization(
                lr=args.lr, max_steps=args.steps, samples_per_step=args.samples_per_step, tol=args.tol
            )
            elbolab.analyze_gaps(
                run, n_points=args.n_points, optimization=optimization, k=args.k, elbo_samples=args.elbo_samples
            )
            print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)
        stored = read_eval(run) or {}
        if GAPS_KEY in stored:
            rows.append((name, read_config(run), stored))

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    header = ("| run | bound | epochs | N | log p(x) | L[q*] | L[q_phi] | approximation gap | amortization gap | "
              "amortization share | steps | seconds |")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name, config, stored in rows:
        g = stored[GAPS_KEY]
        bound = config.bound.name if config.bound.name == "elbo" else f"{config.bound.name} k={config.bound.k}"
        approx, amort = g["approximation_gap"]["mean"], g["amortization_gap"]["mean"]
        share = amort / (approx + amort) if approx + amort > 0 else float("nan")
        epochs = torch.load(run_dirs[name] / CHECKPOINT, map_location="cpu", weights_only=True)["epoch"]  # of the copy

        def cell(stat: dict) -> str:
            return f"{stat['mean']:.2f} +- {stat['se']:.2f}"

        print(
            f"| {name} | {bound} | {epochs} | {g['n_examples']} | {cell(g['log_likelihood'])} | "
            f"{cell(g['elbo_optimized'])} | {cell(g['elbo_amortized'])} | {cell(g['approximation_gap'])} | "
            f"{cell(g['amortization_gap'])} | {share:.0%} | {g['optimizer']['steps']} | {g['seconds']:.0f} |"
        )
    summary = {name: stored[GAPS_KEY] for name, _, stored in rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gaps_summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
