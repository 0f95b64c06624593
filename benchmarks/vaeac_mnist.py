"""VAEAC inpainting on binarized MNIST (Ivanov, Figurnov & Vetrov 2019, sec. 5.3): train, evaluate, draw the grid.

Trains the vaeac-mnist preset (3 x 256 ReLU MLPs, 32-d z, Bernoulli on the
hidden pixels; masks: per image a random rectangle or MCAR pixels) for
--epochs epochs on the 60k dynamically binarized training images, evaluates
it with ``elbolab.evaluate`` on the first --n-test test images under their
fixed test masks (L_k = the IWAE form of the bound, an estimate of
log p(x_b | x_{1-b}, b) in nats per image; the hidden-pixel error of the
point inpainting), and writes the inpainting grid (per row: the given pixels
with the hole in red, --samples inpaintings, the truth) as a PNG.

    OMP_NUM_THREADS=1 python benchmarks/vaeac_mnist.py --epochs 3 --n-test 500 --grid docs/vaeac-mnist-inpainting.png
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from elbolab.completions import sample_completions
from quality_mnist import print_table_head, train_and_evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--ks", default="1,5,50,500", help="importance samples of the test bound curve")
    parser.add_argument("--samples", type=int, default=6, help="inpaintings per test digit in the grid")
    parser.add_argument("--rows", type=int, default=8, help="test digits in the grid")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides (key=value)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/vaeac-mnist"))
    parser.add_argument("--grid", type=Path, default=Path("docs/vaeac-mnist-inpainting.png"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    start = time.perf_counter()
    ks = [int(k) for k in args.ks.split(",")]
    r = train_and_evaluate("vaeac-mnist", args.out, args.epochs, args.batch_size, args.n_test, tuple(args.set), "vaeac", ks)
    grid = sample_completions(args.out / "vaeac", args.grid, n=args.samples, rows=args.rows, seed=0)
    tm = r["task_metrics"]
    print_table_head(
        f"budget: {r['epochs']} epochs of batch {args.batch_size} over the training images (60k for MNIST) ({r['train_hours']:.2f} h of training); "
        f"test: the first {r['n_examples']} test images (binarized once, masked once at eval.seed); "
        f"masks {tm['mask']} at level {tm['mask_level']} ({tm['hidden_fraction']:.1%} of the pixels hidden); "
        f"load average {os.getloadavg()[0]:.1f}; total {time.perf_counter() - start:.0f} s",
        ["ELBO", *[f"L_{k}" for k in r["bound_curve"]], "KL(q \\|\\| p)", "hidden-pixel error", "grid"],
    )
    curve = " | ".join(f"{s['mean']:.2f} ± {s['se']:.2f}" for s in r["bound_curve"].values())
    print(f"| {r['elbo']['mean']:.2f} ± {r['elbo']['se']:.2f} | {curve} | {r['kl']['mean']:.2f} | "
          f"{tm['hidden_pixel_error']:.4f} | {grid} |")


if __name__ == "__main__":
    main()
