"""Missing-value imputation on UCI tables: the VAEAC paper's protocol (Ivanov et al. 2019, sec. 5.2).

For each table and each of 5 mask seeds, 50% of the cells are hidden
completely at random (transductive: every method fits on the masked table
and imputes the same rows). Scores: NRMSE (RMSE of the hidden entries / std
of the true column, averaged over real columns) and PFC (share of hidden
categorical entries imputed wrongly), both in the data's own units; mean and
std over the seeds, with the fit + impute time of each method.

Methods side by side: column mean / mode; scikit-learn's IterativeImputer
with BayesianRidge (MICE-style); IterativeImputer with a random forest
(missForest-style); elbolab's VAEACImputer. The scikit-learn imputers see
categorical columns as their integer codes and their imputations are
rounded to the nearest code (they have no categorical model).

    OMP_NUM_THREADS=1 python benchmarks/imputation.py --datasets breast-cancer ecoli
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from elbolab import VAEACImputer
from elbolab.data.tabular import TABULAR_DATASETS, table_from_frame
from elbolab.imputation import BENCHMARK_RESULTS, imputation_metrics, imputation_summary
from elbolab.runs import require_run, write_json

METHODS = ("mean/mode", "MICE (BayesianRidge)", "missForest-style (RF)", "VAEAC")


def sklearn_impute(method: str, values: np.ndarray, column_sizes: list[int], seed: int, rf_trees: int, rf_iter: int) -> np.ndarray:
    """Impute encoded values (categorical columns as codes) with one of the scikit-learn baselines."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, SimpleImputer
    from sklearn.linear_model import BayesianRidge

    categorical = [j for j, s in enumerate(column_sizes) if s > 0]
    real = [j for j, s in enumerate(column_sizes) if s == 0]
    if method == "mean/mode":
        out = values.copy()
        if real:
            out[:, real] = SimpleImputer(strategy="mean").fit_transform(values[:, real])
        if categorical:
            out[:, categorical] = SimpleImputer(strategy="most_frequent").fit_transform(values[:, categorical])
        return out
    if method == "MICE (BayesianRidge)":
        imputer = IterativeImputer(estimator=BayesianRidge(), max_iter=10, random_state=seed)
    else:
        forest = RandomForestRegressor(n_estimators=rf_trees, n_jobs=1, random_state=seed)
        imputer = IterativeImputer(estimator=forest, max_iter=rf_iter, random_state=seed)
    out = imputer.fit_transform(values)
    for j in categorical:  # nearest valid code
        out[:, j] = np.clip(np.rint(out[:, j]), 0, column_sizes[j] - 1)
    return out


def run(args: argparse.Namespace) -> dict:
    results: dict = {"args": vars(args), "datasets": {}}
    for name in args.datasets:
        frame = TABULAR_DATASETS[name]()
        full_rows = len(frame)
        if args.max_rows and len(frame) > args.max_rows:
            frame = frame.sample(n=args.max_rows, random_state=0).reset_index(drop=True)
        table = table_from_frame(frame, source=name)
        sizes = table.schema.column_sizes
        steps_per_epoch = math.ceil(len(frame) * 0.9 / args.batch_size)  # 10% of rows validate
        epochs = max(1, math.ceil(args.steps / steps_per_epoch))
        entry = {"rows": len(frame), "rows_in_file": full_rows, "real_columns": sizes.count(0),
                 "categorical_columns": len(sizes) - sizes.count(0), "vaeac_epochs": epochs, "runs": {m: [] for m in args.methods}}
        print(f"{name}: {len(frame)} of {full_rows} rows, {len(sizes)} columns; VAEAC {epochs} epochs", file=sys.stderr, flush=True)
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            hidden = (rng.random(table.values.shape) < args.missing) & ~table.missing
            masked = table.values.copy()
            masked[hidden] = np.nan
            for method in args.methods:
                start = time.perf_counter()
                if method == "VAEAC":
                    imputer = VAEACImputer(epochs=epochs, lr=args.lr, batch_size=args.batch_size, latent_dim=args.latent_dim,
                                           hidden=[args.width] * args.depth, categorical=table.schema.categorical,
                                           valid_fraction=0.1, num_imputations=args.num_imputations, seed=seed,
                                           learn_sigma=not args.fixed_sigma, mask_level=args.mask_level)
                    completed = imputer.fit_transform(frame.mask(hidden))
                    imputed = table_from_frame(completed, schema=table.schema, source=name).values
                else:
                    imputed = sklearn_impute(method, masked, sizes, seed, args.rf_trees, args.rf_iter)
                seconds = time.perf_counter() - start
                scores = imputation_metrics(table.values, imputed, hidden, sizes)
                entry["runs"][method].append({**scores, "seconds": seconds, "seed": seed})
                print(f"  seed {seed} {method:<24} NRMSE {scores['nrmse']:.4f}  PFC {scores['pfc']:.4f}  {seconds:.1f}s",
                      file=sys.stderr, flush=True)
        results["datasets"][name] = entry
        if args.out:
            write_json(Path(args.out), results)
        if args.run:  # the report of that run shows the comparison (issue 6)
            write_json(require_run(args.run) / BENCHMARK_RESULTS, results)
    return results


def summary(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def table(results: dict) -> str:
    lines = ["| data set (rows used) | method | NRMSE | PFC | fit + impute s |", "|---|---|---|---|---|"]
    for row in imputation_summary(results):
        lines.append(f"| {row['dataset']} ({row['rows']}) | {row['method']} | {summary(row['nrmse'], row['nrmse_std'])} | "
                     f"{summary(row['pfc'], row['pfc_std'])} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(TABULAR_DATASETS), choices=list(TABULAR_DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--missing", type=float, default=0.5, help="MCAR share of cells hidden")
    parser.add_argument("--max-rows", type=int, default=2000, help="subsample larger tables to this many rows (0: all)")
    parser.add_argument("--steps", type=int, default=1500, help="VAEAC optimiser steps (epochs = steps / batches)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--num-imputations", type=int, default=10)
    parser.add_argument("--fixed-sigma", action="store_true", help="VAEAC's Gaussian sigma fixed to 1 instead of learned")
    parser.add_argument("--mask-level", type=float, default=0.2, help="VAEAC's MCAR training-mask probability")
    parser.add_argument("--rf-trees", type=int, default=20)
    parser.add_argument("--rf-iter", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="", help="also write the raw results as JSON")
    parser.add_argument("--run", default="", help=f"also write them as {BENCHMARK_RESULTS} into this run directory (its report shows them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run(args)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
    print(table(results))


if __name__ == "__main__":
    main()
