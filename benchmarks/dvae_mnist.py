"""Denoising: DVAE (and denoising IWAE) vs VAE vs IWAE on binarized MNIST under one budget, noise level swept.

Every model: the IWAE paper's networks (784-200-200-50 tanh), Adam (eps 1e-4),
the paper's learning-rate schedule cut at --epochs, 60k dynamically binarized
training images, batch --batch-size. The DVAE's encoder sees salt-and-pepper
noise at the level shown; every model is scored on the same **clean** test
images with k = 5000 (Im, Ahn, Memisevic & Bengio 2017, sec. 5). Runs resume.

    OMP_NUM_THREADS=1 python benchmarks/dvae_mnist.py --epochs 5 --n-test 500 --out benchmarks/runs/dvae
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from quality_mnist import print_table_head, train_and_evaluate

# (run name, preset, overrides, label)
MODELS = [
    ("vae", "vae-mnist", (), "VAE"),
    ("iwae-k5", "iwae-mnist-k5", (), "IWAE k=5"),
    ("dvae-sp05", "dvae-mnist-sp05", (), "DVAE s&p 0.05"),
    ("dvae-sp10", "dvae-mnist", (), "DVAE s&p 0.10"),
    ("dvae-sp25", "dvae-mnist-sp25", (), "DVAE s&p 0.25"),
    ("dvae-sp50", "dvae-mnist", ("bound.corruption_level=0.5",), "DVAE s&p 0.50"),
    ("diwae-k5-sp10", "diwae-mnist-k5", (), "DIWAE k=5 s&p 0.10"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/dvae"))
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    chosen = [m for m in MODELS if not args.only or m[0] in args.only.split(",")]
    rows = []
    for name, preset, overrides, label in chosen:
        start = time.perf_counter()
        result = train_and_evaluate(preset, args.out, args.epochs, args.batch_size, args.n_test, overrides, name)
        print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)
        rows.append((label, result))

    print_table_head(
        f"budget: {args.epochs} epochs of batch {args.batch_size} per model on 60k images; "
        f"test: the first {args.n_test} clean binarized test images, k = 5000",
        ["model", "epochs", "train h", "-log p(x) k=5000", "-ELBO (bound)", "gap", "active units"],
    )
    for label, r in rows:
        ll = r["log_likelihood"]
        print(
            f"| {label} | {r['epochs']} | {r['train_hours']:.2f} | {-ll['mean']:.2f} +- {ll['se']:.2f} | "
            f"{-r['elbo']['mean']:.2f} +- {r['elbo']['se']:.2f} | {r['gap']['mean']:.2f} | "
            f"{r['active_units']['count']} / {len(r['active_units']['cov'])} |"
        )
    (args.out / "summary.json").write_text(json.dumps({label: r for label, r in rows}, indent=2))


if __name__ == "__main__":
    main()
