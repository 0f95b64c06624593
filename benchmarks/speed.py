"""Speed: MNIST VAE / IWAE training throughput against this machine's matmul
peak, and against pythae's trainer on the same networks, batch and data.

    python benchmarks/speed.py                 # elbolab only
    python benchmarks/speed.py --pythae /work/venvs/pythae/bin/python   # side by side with pythae

pythae runs in its own virtual environment (it is no dependency of elbolab):
``python -m venv V && V/bin/pip install torch==2.13.0 pythae``.

Throughput is measured on real epochs of elbolab.train (the first
--n-images MNIST training images, dynamically binarized, batch 100, fused
Adam), the first epoch discarded as warm-up; pythae's BaseTrainer gets the
same images (binarized once), networks, batch and Adam settings. FLOPs count 2 per multiply-add in every Linear layer (encoder once
per image, decoder once per sample) and a backward pass costing twice the
forward one; the fraction is that rate over the best of several 2048 x 2048
float32 matmuls on the same threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import elbolab
from elbolab.data import binarize, load_mnist
from elbolab.runs import read_metrics

KS = (1, 5, 50)


def peak_matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The best float32 matmul rate of this machine at this thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def linear_flops(module: torch.nn.Module) -> int:
    """Forward FLOPs of every Linear layer in ``module`` for one input row."""
    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def training_flops_per_image(model: torch.nn.Module, k: int) -> int:
    """Forward + backward (= 3 x forward) FLOPs of one image with k importance samples."""
    return 3 * (linear_flops(model.encoder) + k * linear_flops(model.decoder))


def subset_npz(n_images: int, directory: Path) -> Path:
    """The first ``n_images`` grey MNIST training images (and the test set) as an .npz data set."""
    arrays = load_mnist()
    grey = np.concatenate([arrays["x_train"], arrays["x_valid"]])[:n_images]
    path = directory / f"mnist-{n_images}.npz"
    np.savez(path, x_train=grey, x_test=arrays["x_test"], y_test=arrays["y_test"])
    return path


def elbolab_epochs(k: int, batch_size: int, epochs: int, data: Path) -> tuple[list[float], torch.nn.Module]:
    """Seconds of each measured training epoch (the first discarded), and the model."""
    preset = "vae-mnist" if k == 1 else "iwae-mnist-k5"
    overrides = [f"train.epochs={epochs + 1}", f"train.batch_size={batch_size}", "train.eval_subset=0",
                 f"bound.k={k}", "train.lr_schedule='constant'", f"data.name={str(data)!r}",
                 "data.train_splits=['train']"]
    config = elbolab.apply_overrides(elbolab.load_preset(preset), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = elbolab.train(config, Path(tmp) / "run", progress=False)
        seconds = [m["train_seconds"] for m in read_metrics(run)[1:]]
        model = elbolab.load(run)
    return seconds, model


def pythae_epochs(python: str, k: int, batch_size: int, epochs: int, data: Path, threads: int) -> list[float]:
    """Seconds of each measured epoch of pythae's BaseTrainer (first discarded), run by pythae's own python."""
    script = Path(__file__).with_name("pythae_epochs.py")
    args = [python, str(script), "--k", str(k), "--batch-size", str(batch_size), "--epochs", str(epochs + 1),
            "--data", str(data), "--threads", str(threads)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])[1:]


@torch.inference_mode()
def log_likelihood_seconds(model: torch.nn.Module, n_images: int, k: int = 5000) -> float:
    """Seconds for the k-sample log-likelihood of ``n_images`` test images, with evaluate's default chunking."""
    arrays = load_mnist()
    x = binarize(torch.from_numpy(arrays["x_test"][:n_images]), "dynamic", torch.Generator().manual_seed(0))
    defaults = elbolab.Config().eval
    start = time.perf_counter()
    for i in range(0, n_images, defaults.batch_size):
        elbolab.importance_sample(model, x[i : i + defaults.batch_size], k=k, k_chunk=defaults.k_chunk)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per setting (after one warm-up)")
    parser.add_argument("--n-images", type=int, default=12_000, help="training images per epoch (rates scale to 60k)")
    parser.add_argument("--n-test", type=int, default=500, help="test images for the k=5000 timing (scaled to 10k)")
    parser.add_argument("--pythae", metavar="PYTHON", help="python of a venv with pythae, to measure it side by side")
    args = parser.parse_args()

    peak = peak_matmul_gflops()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"float32 matmul peak {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.n_images} training images per epoch, batch {args.batch_size}, {args.epochs} measured epochs\n")
    rows, ll_seconds = [], None
    with tempfile.TemporaryDirectory() as tmp:
        data = subset_npz(args.n_images, Path(tmp))
        for k in KS:
            ours, model = elbolab_epochs(k, args.batch_size, args.epochs, data)
            theirs = (pythae_epochs(args.pythae, k, args.batch_size, args.epochs, data, torch.get_num_threads())
                      if args.pythae else [])
            ours_s = statistics.median(ours)
            rate = args.n_images / ours_s
            gflops = rate * training_flops_per_image(model, k) / 1e9
            rows.append((k, ours_s, rate, gflops, statistics.median(theirs) if theirs else None))
            if k == 1:
                ll_seconds = log_likelihood_seconds(model, args.n_test)

    header = "| k | elbolab s/epoch | images/s | model GFLOP/s | % of matmul peak |"
    header += " pythae s/epoch | speed-up |" if args.pythae else ""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for k, ours_s, rate, gflops, theirs_s in rows:
        line = f"| {k} | {ours_s:.2f} | {rate:,.0f} | {gflops:.1f} | {100 * gflops / peak:.0f}% |"
        if args.pythae:
            line += f" {theirs_s:.2f} | {theirs_s / ours_s:.1f}x |"
        print(line)
    per_image = ll_seconds / args.n_test
    print(f"\nlog-likelihood, k = 5000: {ll_seconds:.1f} s for {args.n_test} test images "
          f"= {per_image * 10_000 / 60:.1f} min for all 10,000 (batch 10 x k_chunk 250)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
