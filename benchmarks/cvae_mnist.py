"""Conditional: CVAE vs the deterministic NN baseline (and GSNN / hybrid) on MNIST quadrant completion,
1, 2 and 3 given quadrants, next to Table 1 of Sohn, Lee & Yan (2015).

Networks of the cvae-mnist preset (500-500 ReLU MLPs, 50-d z; the NN is the
generation network on c alone), Adam lr 1e-3, batch --batch-size, 60k
dynamically binarized training images, --epochs epochs. Test: the first
--n-test test images binarized once; the negative conditional log-likelihood
-log p(x | c) by importance sampling with proposal q(z | x, c) and prior
p(z | c) at S = 100 (the paper's protocol, one estimate per image) and
S = 5000; the negative ELBO beside it (a bound, not a log-likelihood). The
NN's log p(x | c) is exact at any S, so it is evaluated at S = 100 only.

    OMP_NUM_THREADS=1 python benchmarks/cvae_mnist.py --epochs 3 --n-test 200 --out benchmarks/runs/cvae
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from elbolab.quadrants import PAPER_TABLE_1
from quality_mnist import print_table_head, train_and_evaluate

# (run name, preset, label, paper key, evaluation ks)
MODELS = [
    ("nn", "nn-mnist", "NN", "NN", [1, 100]),
    ("cvae", "cvae-mnist", "CVAE", "CVAE", [1, 100, 5000]),
    ("hybrid", "cvae-hybrid-mnist", "hybrid a=0.5", None, [1, 100, 5000]),
    ("gsnn", "gsnn-mnist", "GSNN", None, [1, 100, 5000]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--given", default="1,2,3")
    parser.add_argument("--models", default="nn,cvae", help="comma-separated: nn, cvae, hybrid, gsnn")
    parser.add_argument("--s-max", type=int, default=5000, help="largest S for the latent models (100: the paper's S only)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/cvae"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    rows = []
    for given in [int(g) for g in args.given.split(",")]:
        for name, preset, label, paper_key, ks in MODELS:
            if name not in args.models.split(","):
                continue
            start = time.perf_counter()
            result = train_and_evaluate(
                preset, args.out, args.epochs, args.batch_size, args.n_test,
                (f"data.given_quadrants={given}",), f"{name}-q{given}", sorted({*ks[:-1], min(ks[-1], args.s_max)}),
            )
            print(f"{name}-q{given}: done in {time.perf_counter() - start:.0f} s", flush=True)
            rows.append((given, label, paper_key, result))

    print_table_head(
        f"budget: {args.epochs} epochs of batch {args.batch_size} per model on 60k images; "
        f"test: the first {args.n_test} test images (binarized once)",
        ["given", "model", "epochs", "train h", "-log p(x \\| c) S=100", "-log p(x \\| c) S=5000", "paper (S=100)",
         "-ELBO (bound)", "KL(q \\|\\| p)"],
    )
    for given, label, paper_key, r in rows:
        s100 = r["task_metrics"]["neg_cll_S100"]
        ll = r["log_likelihood"]
        if ll["k"] == 5000:
            s5000 = f"{-ll['mean']:.2f} +- {ll['se']:.2f}"
        else:
            s5000 = "exact: = S=100" if r["model"] == "conditional-nn" else "not run (--s-max)"
        paper = f"{PAPER_TABLE_1[given][paper_key]:.2f}" if paper_key else "-"
        print(
            f"| {given} | {label} | {r['epochs']} | {r['train_hours']:.2f} | {s100['mean']:.2f} +- {s100['se']:.2f} | "
            f"{s5000} | {paper} | {-r['elbo']['mean']:.2f} +- {r['elbo']['se']:.2f} | {r['kl']['mean']:.2f} |"
        )
    (args.out / "summary.json").write_text(json.dumps({f"{g}-{label}": r for g, label, _, r in rows}, indent=2))


if __name__ == "__main__":
    main()
