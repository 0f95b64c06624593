"""Speed: MNIST VAE / IWAE training throughput against this machine's matmul
peak, and against pythae's trainer on the same networks, batch and data.

    python benchmarks/speed.py                 # elbolab only
    python benchmarks/speed.py --pythae /work/venvs/pythae/bin/python   # side by side with pythae
    python benchmarks/speed.py --pythae /work/venvs/pythae/bin/python --rounds 3   # alternating, medians

pythae runs in its own virtual environment (it is no dependency of elbolab):
``python -m venv V && V/bin/pip install torch==2.13.0 pythae``.

Throughput is measured on real epochs of elbolab.train (the first
--n-images MNIST training images, dynamically binarized, batch 100, fused
Adam), eager and with ``train.compile=true``, the first epoch (which holds
the compilation) discarded as warm-up; pythae's BaseTrainer gets the same
images (binarized once), networks, batch and Adam settings. With
``--rounds N`` the three (eager, compiled, pythae) run N times in turn and
each column is the median over all rounds: this shared host's speed drifts
by tens of percent between minutes, and alternating puts every trainer in
the same minutes (one round: pythae's k = 1 epoch read 0.86 s in one run and
1.31 s in the next).

FLOPs are the matmul FLOPs the step actually executes, 2 per multiply-add.
For a Linear layer with n_in inputs, n_out outputs and R rows (R = B for
the encoder's layers, k * B for the decoder's):

    forward           2 R n_in n_out
    backward, dW      2 R n_in n_out
    backward, dX      2 R n_in n_out   (not for the encoder's first layer: x needs no gradient)

Elementwise work (tanh, softplus, log-densities, Adam) is not counted. The
fraction is that rate over the best of several 2048 x 2048 float32 matmuls
on the same threads, on MKL (torch.mm) and on oneDNN (the better of the
two: on AMD CPUs MKL runs its AVX2 kernels), timed just before and just
after that row's compiled epochs (this shared host's matmul rate drifts by
+-20% from minute to minute, so a peak read once at the start can sit in a
slow or a fast minute; the row's "peak GFLOP/s" is the better of the two
readings). The "matmul bound" column times exactly those matmuls of one
step (at the step's shapes, each on its faster backend, timed alone with
hot caches, nothing else): no implementation of this model on this CPU, at
this batch, can exceed it. "5x pythae needs" is the matmul rate an epoch 5x
shorter than pythae's would have to reach (issue 2's target), as a share of
the peak: above 100% (and above the "matmul bound"), no code of these
networks on this CPU reaches 5x.
(Small cache-resident matmuls can run faster than the 2048 x 2048 peak, so
the bound may exceed 100% at 1 thread.)
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
from typing import Callable

import numpy as np
import torch

import elbolab
from elbolab import nets
from elbolab.data import binarize, load_mnist
from elbolab.runs import read_metrics

KS = (1, 5, 50)
CHUNKINGS = ((10, 250), (50, 200), (100, 100))  # (test images, samples) per log-weights pass


def call_seconds(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    return min(call_seconds(fn, repeats))


def matmul_backends() -> dict[str, Callable[[torch.Tensor, torch.Tensor], object]]:
    """The float32 matmul libraries torch reaches here: MKL (torch.mm) and, where built in, oneDNN; each takes a [r, n], b^T [m, n]."""
    backends = {"mkl": lambda a, bt: torch.mm(a, bt.t())}
    if torch.backends.mkldnn.is_available():
        backends["onednn"] = lambda a, bt: nets.onednn_linear(a, bt, None)  # nets.Linear's kernel on that path
    return backends


def peak_matmul_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """The best float32 matmul rate of each backend on this machine at this thread count.

    Both count: MKL gives AMD CPUs its AVX2 kernels, and on the AVX-512 Zen 5
    oneDNN's 2048^3 runs twice as fast, so the peak is the better of the two.
    """
    a, bt = torch.randn(n, n), torch.randn(n, n)
    return {name: 2 * n**3 / _best_seconds(lambda: mm(a, bt), repeats) / 1e9 for name, mm in matmul_backends().items()}


def step_matmuls(model: torch.nn.Module, k: int, batch: int) -> list[tuple[int, int, int, str]]:
    """The (rows, inner, cols, what) matmuls of one training step, forward and backward (see the module docstring)."""
    shapes = []
    for part, rows in (("encoder", batch), ("decoder", k * batch)):
        linears = [m for m in getattr(model, part).modules() if isinstance(m, torch.nn.Linear)]
        for i, m in enumerate(linears):
            shapes.append((rows, m.in_features, m.out_features, f"{part} forward"))
            shapes.append((m.out_features, rows, m.in_features, f"{part} dW"))
            if not (part == "encoder" and i == 0):
                shapes.append((rows, m.out_features, m.in_features, f"{part} dX"))
    return shapes


def training_flops_per_image(model: torch.nn.Module, k: int) -> int:
    """Matmul FLOPs of one image's share of a training step with k importance samples (fwd + bwd)."""
    return sum(2 * r * n * m for r, n, m, _ in step_matmuls(model, k, 1))


def matmul_bound_seconds(model: torch.nn.Module, k: int, batch: int, repeats: int = 20) -> float:
    """Seconds of only the matmuls of one step at these shapes: the sum of each one's best of ``repeats`` on its faster backend.

    Each matmul is timed on its own with its operands hot in cache (the most
    favourable case), so the sum is a lower bound on any step's matmul time.
    """
    total = 0.0
    for r, n, m, _ in step_matmuls(model, k, batch):
        a, bt = torch.randn(r, n), torch.randn(m, n)
        total += min(_best_seconds(lambda: mm(a, bt), repeats) for mm in matmul_backends().values())
    return total


def subset_npz(n_images: int, directory: Path) -> Path:
    """The first ``n_images`` grey MNIST training images (and the test set) as an .npz data set."""
    arrays = load_mnist()
    grey = np.concatenate([arrays["x_train"], arrays["x_valid"]])[:n_images]
    path = directory / f"mnist-{n_images}.npz"
    np.savez(path, x_train=grey, x_test=arrays["x_test"], y_test=arrays["y_test"])
    return path


def all_epochs(k: int, batch_size: int, epochs: int, data: Path, compile: bool) -> tuple[list[float], torch.nn.Module]:
    """``train_seconds`` of every epoch of one elbolab run (the first holds any compilation), and the model."""
    preset = "vae-mnist" if k == 1 else "iwae-mnist-k5"
    overrides = [f"train.epochs={epochs}", f"train.batch_size={batch_size}", "train.eval_subset=0",
                 f"bound.k={k}", "train.lr_schedule='constant'", f"data.name={str(data)!r}",
                 "data.train_splits=['train']", f"train.compile={str(compile).lower()}"]
    config = elbolab.apply_overrides(elbolab.load_preset(preset), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = elbolab.train(config, Path(tmp) / "run", progress=False)
        return [m["train_seconds"] for m in read_metrics(run)], elbolab.load(run)


def elbolab_epochs(k: int, batch_size: int, epochs: int, data: Path, compile: bool) -> tuple[list[float], torch.nn.Module]:
    """Seconds of each measured training epoch (a first one, with any compilation, run and discarded), and the model."""
    seconds, model = all_epochs(k, batch_size, epochs + 1, data, compile)
    return seconds[1:], model


def pythae_epochs(python: str, k: int, batch_size: int, epochs: int, data: Path, threads: int) -> list[float]:
    """Seconds of each measured epoch of pythae's BaseTrainer (first discarded), run by pythae's own python."""
    script = Path(__file__).with_name("pythae_epochs.py")
    args = [python, str(script), "--k", str(k), "--batch-size", str(batch_size), "--epochs", str(epochs + 1),
            "--data", str(data), "--threads", str(threads)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])[1:]


@torch.inference_mode()
def log_likelihood_seconds(model: torch.nn.Module, n_images: int, batch: int, k_chunk: int, compile: bool,
                           k: int = 5000) -> float:
    """Seconds for the k-sample log-likelihood of ``n_images`` test images (after one warm-up batch)."""
    arrays = load_mnist()
    x = binarize(torch.from_numpy(arrays["x_test"][:n_images]), "dynamic", torch.Generator().manual_seed(0))
    for rows in {batch, n_images % batch} - {0}:  # every batch shape once, so no compilation is timed
        elbolab.importance_sample(model, x[:rows], k=k, k_chunk=k_chunk, compile=compile)
    start = time.perf_counter()
    for i in range(0, n_images, batch):
        elbolab.importance_sample(model, x[i : i + batch], k=k, k_chunk=k_chunk, compile=compile)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per setting (after one warm-up)")
    parser.add_argument("--n-images", type=int, default=12_000, help="training images per epoch (rates scale to 60k)")
    parser.add_argument("--n-test", type=int, default=500, help="test images for the k=5000 timing (scaled to 10k)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat eager, compiled and pythae epochs this many times, alternating; medians over all")
    parser.add_argument("--pythae", metavar="PYTHON", help="python of a venv with pythae, to measure it side by side")
    args = parser.parse_args()
    if args.pythae and not os.access(args.pythae, os.X_OK):
        parser.error(f"--pythae {args.pythae}: no such python (make the venv: see this script's docstring)")
    if args.threads:
        torch.set_num_threads(args.threads)
    elbolab.reuse_freed_memory()  # as the elbolab command does

    peaks = peak_matmul_gflops()
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"float32 matmul peak at 2048^3: " + ", ".join(f"{name} {rate:.1f}" for name, rate in peaks.items())
          + f" GFLOP/s; oneDNN for every large product: {nets.ONEDNN_ALL_PRODUCTS}; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.n_images} training images per epoch, batch {args.batch_size}, {args.epochs} measured epochs "
          f"x {args.rounds} round(s), medians\n")
    rows, models = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = subset_npz(args.n_images, Path(tmp))
        for k in KS:
            eager, fast, theirs, peaks_seen = [], [], [], []
            for _ in range(args.rounds):  # rounds interleave the three trainers over the same minutes
                eager += elbolab_epochs(k, args.batch_size, args.epochs, data, compile=False)[0]
                peaks_seen.append(max(peak_matmul_gflops().values()))
                seconds, model = elbolab_epochs(k, args.batch_size, args.epochs, data, compile=True)
                fast += seconds
                peaks_seen.append(max(peak_matmul_gflops().values()))
                if args.pythae:
                    theirs += pythae_epochs(args.pythae, k, args.batch_size, args.epochs, data, torch.get_num_threads())
            row_peak = max(peaks_seen)  # the host's speed drifts: the peak of these minutes
            models[k] = model
            flops = training_flops_per_image(model, k) * args.batch_size  # per step
            bound = flops / matmul_bound_seconds(model, k, args.batch_size) / 1e9
            rows.append((k, statistics.median(eager), statistics.median(fast), flops / args.batch_size, bound,
                         statistics.median(theirs) if theirs else None, row_peak))

    header = "| k | eager s/epoch | compiled s/epoch | images/s | model GFLOP/s | peak GFLOP/s | % of matmul peak | matmul bound |"
    header += " pythae s/epoch | speed-up (compiled) | speed-up ceiling | 5x pythae needs |" if args.pythae else ""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for k, eager_s, fast_s, per_image, bound, theirs_s, row_peak in rows:
        rate = args.n_images / fast_s
        gflops = rate * per_image / 1e9
        line = (f"| {k} | {eager_s:.2f} | {fast_s:.2f} | {rate:,.0f} | {gflops:.1f} | {row_peak:.1f} | "
                f"{100 * gflops / row_peak:.0f}% | {100 * bound / row_peak:.0f}% |")
        if args.pythae:
            matmul_only_s = args.n_images * per_image / (bound * 1e9)  # an epoch of nothing but the step's matmuls
            needed = 5 * args.n_images * per_image / theirs_s / 1e9  # GFLOP/s of an epoch 5x shorter than pythae's
            line += (f" {theirs_s:.2f} | {theirs_s / fast_s:.1f}x | {theirs_s / matmul_only_s:.1f}x | "
                     f"{needed:.0f} GFLOP/s = {100 * needed / row_peak:.0f}% of peak |")
        print(line)
    print("\nmatmul FLOPs per image (fwd + bwd, see the docstring): "
          + ", ".join(f"k={k}: {training_flops_per_image(models[k], k) / 1e6:.2f} M" for k in KS))
    print("matmul bound = only the step's matmuls at batch "
          f"{args.batch_size} (at its shapes, each on its faster backend) as a share of the peak: the ceiling for '% of matmul peak'")
    if args.pythae:
        print("speed-up ceiling = pythae's epoch over an epoch of only the matmul-bound steps: no trainer of these "
              "networks at this batch can beat pythae by more")
        print("5x pythae needs = the matmul rate of an epoch 5x shorter than pythae's: above the matmul bound, "
              "5x is out of reach on this CPU whatever the rest of the step costs")

    print(f"\nlog-likelihood, k = 5000, {args.n_test} test images, scaled to all 10,000:")
    print("| test images x samples per pass | compile | seconds | min for 10k |")
    print("|---|---|---|---|")
    for (batch, k_chunk), compile in [(c, False) for c in CHUNKINGS] + [(c, True) for c in CHUNKINGS]:
        seconds = log_likelihood_seconds(models[1], args.n_test, batch, k_chunk, compile)
        print(f"| {batch} x {k_chunk} | {'yes' if compile else 'no'} | {seconds:.1f} | "
              f"{seconds / args.n_test * 10_000 / 60:.1f} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
