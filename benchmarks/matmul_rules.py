"""Which matmul library each product of a Linear layer should use on this CPU: whole compiled training
epochs under nets.py's rule for this machine and under the ELBOLAB_MATMUL overrides, side by side.

    python benchmarks/matmul_rules.py                 # k = 1, 5, 50 at batch 100, 3 alternating rounds
    python benchmarks/matmul_rules.py --ks 5 --rounds 5
    python benchmarks/matmul_rules.py --products      # each product of a step alone, oneDNN against MKL

nets.py fixes per machine (CPU vendor, family and ISA) which float32 products run on oneDNN instead of
MKL, so that a resumed run computes what the interrupted one did. This script is how such a rule is
checked on a new CPU: each variant trains the MNIST VAE / IWAE (the first --n-images training images,
batch 100, train.compile=true) in a fresh process, the variants take turns within each round (this
shared host's speed drifts between minutes), and each cell is the median of the later epochs of all
rounds (the first epoch holds the compile). Variants:

    rule     nets.py's choice for this machine (printed: ONEDNN_ALL_PRODUCTS, _WEIGHT_GRADIENTS, _INPUT_GRADIENTS)
    onednn   ELBOLAB_MATMUL=onednn: every product of >= 16 MFLOP on oneDNN, weight gradients too
    mkl      ELBOLAB_MATMUL=mkl: MKL but for forwards with >= 2^20 outputs in rows >= 2048 wide

With ``--products`` it instead times each matmul of one training step alone (forward x W^T + b, input
gradient g W, weight gradient g^T x, at the MNIST nets' shapes for batch 100 and each k), on oneDNN as
nets.py calls it and on MKL, interleaved in one process (median GFLOP/s of ``--repeats`` calls each).
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

VARIANTS = {"rule": "", "onednn": "onednn", "mkl": "mkl"}
RUN = """
import json, sys
from pathlib import Path
sys.path.insert(0, {here!r})
import torch
import speed
from elbolab import nets
torch.set_num_threads({threads})
seconds, _ = speed.all_epochs({k}, {batch}, {epochs}, Path({data!r}), True)
print(json.dumps({{"seconds": seconds, "all": nets.ONEDNN_ALL_PRODUCTS, "dW": nets.ONEDNN_WEIGHT_GRADIENTS, "dX": nets.ONEDNN_INPUT_GRADIENTS}}))
"""


def epoch_seconds(variant: str, k: int, batch: int, epochs: int, data: Path, threads: int) -> dict:
    """One fresh-process run: every epoch's train_seconds and the rule the process took."""
    env = {key: value for key, value in os.environ.items() if key != "ELBOLAB_MATMUL"}
    if VARIANTS[variant]:
        env["ELBOLAB_MATMUL"] = VARIANTS[variant]
    code = RUN.format(here=str(Path(__file__).parent), threads=threads, k=k, batch=batch, epochs=epochs, data=str(data))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


ENCODER = ((784, 200), (200, 200), (200, 100))  # the IWAE paper's MNIST nets (in, out); the head gives mean and log-scale
DECODER = ((50, 200), (200, 200), (200, 784))


def product_rates(rows: int, n_in: int, n_out: int, repeats: int) -> dict[str, tuple[float, float]]:
    """GFLOP/s (oneDNN, MKL) of a Linear layer's forward, input gradient and weight gradient at ``rows`` rows."""
    import torch

    import speed
    from elbolab import nets

    x, w, b, g = torch.randn(rows, n_in), torch.randn(n_out, n_in), torch.randn(n_out), torch.randn(rows, n_out)
    pairs = {
        "forward": (lambda: nets.onednn_linear(x, w, b), lambda: torch.addmm(b, x, w.t())),
        "dX": (lambda: nets.onednn_linear(g, w.t(), None), lambda: g @ w),
    }
    saved = nets.ONEDNN_WEIGHT_GRADIENTS, nets.ONEDNN_MIN_FLOPS
    nets.ONEDNN_WEIGHT_GRADIENTS, nets.ONEDNN_MIN_FLOPS = True, 0  # _grad_weight's oneDNN path, as on other CPUs
    try:
        pairs["dW"] = (lambda: nets._grad_weight(g, x) if nets.ONEDNN_ALL_PRODUCTS else g.t() @ x, lambda: g.t() @ x)
        gflop = 2 * rows * n_in * n_out / 1e9
        rates = {}
        for name, (onednn, mkl) in pairs.items():
            pair = [0.0, 0.0]
            for _ in range(3):  # interleaved: both see the same minutes of this shared host
                pair[0] += statistics.median(speed.call_seconds(onednn, repeats))
                pair[1] += statistics.median(speed.call_seconds(mkl, repeats))
            rates[name] = (3 * gflop / pair[0], 3 * gflop / pair[1])
    finally:
        nets.ONEDNN_WEIGHT_GRADIENTS, nets.ONEDNN_MIN_FLOPS = saved
    return rates


def print_products(ks: list[int], batch: int, threads: int, repeats: int) -> None:
    import torch

    torch.set_num_threads(threads)
    print("| rows | layer (in -> out) | forward oneDNN / MKL | dX oneDNN / MKL | dW oneDNN / MKL |")
    print("|---|---|---|---|---|")
    shapes = [(batch, layer) for layer in ENCODER] + [(k * batch, layer) for k in ks for layer in DECODER]
    for rows, (n_in, n_out) in dict.fromkeys(shapes):
        rates = product_rates(rows, n_in, n_out, repeats)
        cells = " | ".join(f"{rates[p][0]:.0f} / {rates[p][1]:.0f}" for p in ("forward", "dX", "dW"))
        print(f"| {rows} | {n_in} -> {n_out} | {cells} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is discarded)")
    parser.add_argument("--n-images", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--products", action="store_true", help="time each product of a step alone instead")
    parser.add_argument("--repeats", type=int, default=15, help="calls per timing with --products")
    args = parser.parse_args()
    if args.products:
        print(f"# GFLOP/s, median of {args.repeats} calls x 3 interleaved rounds, {args.threads} threads")
        print_products(args.ks, args.batch_size, args.threads, args.repeats)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    import speed

    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, batch {args.batch_size}, "
          f"{args.n_images} images per epoch, {args.rounds} alternating rounds", flush=True)
    later: dict[tuple[str, int], list[float]] = {(v, k): [] for v in VARIANTS for k in args.ks}
    rules: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = speed.subset_npz(args.n_images, Path(tmp))
        for r in range(args.rounds):
            for k in args.ks:
                for variant in VARIANTS:
                    run = epoch_seconds(variant, k, args.batch_size, args.epochs, data, args.threads)
                    later[(variant, k)] += run["seconds"][1:]
                    rules[variant] = f"oneDNN for large products: {run['all']}, for dW: {run['dW']}, for mid-sized dX: {run['dX']}"
                    print(f"round {r + 1} k={k} {variant}: " + " ".join(f"{s:.3f}" for s in run["seconds"]), flush=True)
    print()
    for variant, rule in rules.items():
        print(f"{variant}: {rule}")
    print()
    print("| k | " + " | ".join(f"{v} s/epoch" for v in VARIANTS) + " | rule vs onednn | rule vs mkl |")
    print("|---|" + "---|" * (len(VARIANTS) + 2))
    for k in args.ks:
        med = {v: statistics.median(later[(v, k)]) for v in VARIANTS}
        cells = " | ".join(f"{med[v]:.3f}" for v in VARIANTS)
        print(f"| {k} | {cells} | {med['rule'] / med['onednn'] - 1:+.0%} | {med['rule'] / med['mkl'] - 1:+.0%} |")


if __name__ == "__main__":
    main()
