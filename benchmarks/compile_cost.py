"""What `train.compile` costs and saves: the numbers behind ``AUTO_MIN_UPDATES`` (elbolab/compiled.py).

    python benchmarks/compile_cost.py                     # k = 1, 5, 50 at the paper presets' batch of 20
    python benchmarks/compile_cost.py --batch-size 100 --ks 1 50

For each k, three training runs of ``--epochs`` epochs over the first
``--n-images`` MNIST images, each in a fresh process (so nothing is compiled
in memory yet): eager, compiled with an empty inductor cache (a user's first
compiled run on a machine), and compiled again with the cache the second run
filled (every later run). The compile's cost is a compiled run's first epoch
minus the median of its later ones; the saving per update is the median of
the eager run's later epochs minus that of both compiled runs' later
epochs, over the updates of an epoch. Their ratio is the number
of updates a run needs before compiling pays ("break-even").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from speed import all_epochs, subset_npz


def in_fresh_process(args: argparse.Namespace, k: int, data: Path, compile: bool, cache: Path) -> list[float]:
    """speed.py's :func:`all_epochs` seconds in a new Python process whose inductor cache is ``cache``."""
    command = [sys.executable, __file__, "--worker", json.dumps([k, args.batch_size, args.epochs, str(data), compile])]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 50])
    parser.add_argument("--batch-size", type=int, default=20, help="the paper presets' batch (Burda et al. 2016)")
    parser.add_argument("--n-images", type=int, default=12_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        k, batch, epochs, data, compile = json.loads(args.worker)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        print(json.dumps(all_epochs(k, batch, epochs, Path(data), compile)[0]))
        return

    updates = -(-args.n_images // args.batch_size)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
          f"{args.n_images} images per epoch, batch {args.batch_size} ({updates} updates), {args.epochs} epochs per run; "
          f"load average {os.getloadavg()[0]:.2f}")
    print()
    print("| k | eager s/epoch | compiled s/epoch | saved ms/update | compile s (cold cache) | compile s (warm cache) "
          "| break-even updates (cold) | break-even updates (warm) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = subset_npz(args.n_images, Path(tmp))
        for k in args.ks:
            cache = Path(tmp) / f"inductor-k{k}"
            eager = in_fresh_process(args, k, data, False, cache)
            cold = in_fresh_process(args, k, data, True, cache)
            warm = in_fresh_process(args, k, data, True, cache)
            later = statistics.median(eager[1:])
            steady = statistics.median(cold[1:] + warm[1:])
            saved = (later - steady) / updates
            cost_cold, cost_warm = cold[0] - statistics.median(cold[1:]), warm[0] - statistics.median(warm[1:])

            def break_even(cost: float) -> str:
                return f"{cost / saved:,.0f}" if saved > 0 else "never"

            print(f"| {k} | {later:.2f} | {steady:.2f} | {saved * 1e3:.2f} | {cost_cold:.1f} | {cost_warm:.1f} "
                  f"| {break_even(cost_cold)} | {break_even(cost_warm)} |", flush=True)
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
