"""Collaborative filtering quality on MovieLens-100K (issue 3): Popularity, EASE, Mult-DAE, Mult-VAE, RecVAE.

Liang et al. (2018)'s protocol (ratings > 3.5, users with >= 5, 100 + 100
held-out users, 80/20 fold-in / target) at 5 seeds; a seed changes both the
user split (split_seed = 98765 + seed) and the model's initialisation and
data order (train.seed = seed). Every model is ranked by the same code
(elbolab.ranking.rank_users) on the same test users; the VAEs keep the epoch
with the best validation NDCG@100; EASE's L2 weight is chosen on the
validation users. Prints one JSON line per (model, seed), then a Markdown table.

    OMP_NUM_THREADS=1 python benchmarks/cf_quality.py --out runs/cf-quality
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from elbolab.config import apply_overrides, load_preset
from elbolab.ranking import ease_weights, popularity_scores, rank_users, summarize
from elbolab.recommendation import RecommendationTask, load_split
from elbolab.runs import load
from elbolab.train import train

METRICS = ("ndcg@100", "recall@20", "recall@50")
# ML-20M test numbers the papers report (Recall@20, Recall@50, NDCG@100), for reference only.
PAPER_ML20M = {
    "Mult-VAE": (0.395, 0.537, 0.426),  # Liang et al. 2018, Table 2
    "RecVAE": (0.414, 0.553, 0.442),  # Shenbin et al. 2020, Table 2
    "EASE": (0.391, 0.521, 0.420),  # Steck 2019, Table 1
}
EASE_L2 = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)


def score_with(matrix_fn):
    return lambda rows: torch.from_numpy(np.asarray(matrix_fn(rows), dtype=np.float32))


def popularity(split) -> dict:
    pop = popularity_scores(split.train)
    return summarize(*rank_users(score_with(lambda rows: np.tile(pop, (rows.shape[0], 1))), split.test_in, split.test_out))


def ease(split) -> dict:
    best = None
    for l2 in EASE_L2:
        b = ease_weights(split.train, l2)
        valid = summarize(*rank_users(score_with(lambda rows: rows @ b), split.valid_in, split.valid_out))
        if best is None or valid["ndcg@100"]["mean"] > best[0]:
            best = (valid["ndcg@100"]["mean"], l2, b)
    _, l2, b = best
    out = summarize(*rank_users(score_with(lambda rows: rows @ b), split.test_in, split.test_out))
    out["l2"] = l2
    return out


def vae(preset: str, seed: int, epochs: int, out: Path, extra: list[str]) -> dict:
    config = apply_overrides(load_preset(preset), [f"data.split_seed={98765 + seed}", f"train.seed={seed}",
                                                   f"train.epochs={epochs}", *extra])
    run = out / f"{preset}-seed{seed}"
    start = time.perf_counter()
    if not (run / "checkpoint.pt").exists():
        train(config, run, progress=False)
    seconds = time.perf_counter() - start
    task = RecommendationTask(config)
    result = task.test_metrics(load(run))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    result["train_seconds_per_epoch"] = float(np.mean([r["train_seconds"] for r in records]))
    result["best_epoch"] = int(np.argmax([r["valid_ndcg@100"] for r in records])) + 1
    result["wall_seconds"] = seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cf-quality"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs-vae", type=int, default=200)
    parser.add_argument("--epochs-dae", type=int, default=200)
    parser.add_argument("--epochs-recvae", type=int, default=50)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="override for the VAE presets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        base = apply_overrides(load_preset("mult-vae-ml100k"), [f"data.split_seed={98765 + seed}"])
        split = load_split(base)
        runs = {
            "Popularity": lambda: popularity(split),
            "EASE": lambda: ease(split),
            "Mult-DAE": lambda: vae("mult-dae-ml100k", seed, args.epochs_dae, args.out, args.extra),
            "Mult-VAE": lambda: vae("mult-vae-ml100k", seed, args.epochs_vae, args.out, args.extra),
            "RecVAE": lambda: vae("recvae-ml100k", seed, args.epochs_recvae, args.out, args.extra),
        }
        for name, fn in runs.items():
            result = fn()
            results.setdefault(name, []).append(result)
            print(json.dumps({"model": name, "seed": seed, **result}), flush=True)
    print(table(results, split.counts()))


def table(results: dict[str, list[dict]], counts: dict) -> str:
    lines = [f"MovieLens-100K, {len(next(iter(results.values())))} seeds; split of the last seed: {counts}", "",
             "| model | NDCG@100 | Recall@20 | Recall@50 | paper ML-20M NDCG@100 / R@20 / R@50 |",
             "|---|---|---|---|---|"]
    for name, rows in results.items():
        cells = []
        for metric in METRICS:
            values = np.array([r[metric]["mean"] for r in rows])
            cells.append(f"{values.mean():.3f} +- {values.std(ddof=1) if len(values) > 1 else float('nan'):.3f}")
        paper = PAPER_ML20M.get(name)
        ref = f"{paper[2]:.3f} / {paper[0]:.3f} / {paper[1]:.3f}" if paper else "-"
        lines.append(f"| {name} | {' | '.join(cells)} | {ref} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
