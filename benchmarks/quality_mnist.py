"""Quality: VAE, IWAE k=5 and IWAE k=50 on binarized MNIST under one CPU budget,
next to Table 1 of Burda, Grosse & Salakhutdinov (2016), 1 stochastic layer.

Every model: the paper's networks (784-200-200-50 tanh), Adam (eps 1e-4), the
paper's learning-rate schedule cut at --epochs, 60k dynamically binarized
training images, batch --batch-size; evaluated on all 10k test images with
k = 5000. Runs resume, so the script can be stopped and started again.

    python benchmarks/quality_mnist.py --epochs 50 --out benchmarks/runs/quality
    python benchmarks/quality_mnist.py --epochs 50 --set train.compile=true   # any config field, for every model
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import elbolab
from elbolab.runs import read_metrics
from elbolab.sweep import ensure_trained, evaluation_is_current

PRESETS = {"vae-mnist": 86.76, "iwae-mnist-k5": 85.54, "iwae-mnist-k50": 84.78}  # paper's test NLL (nats)
PAPER_EPOCHS = 3280


def train_and_evaluate(
    preset: str, out: Path, epochs: int, batch_size: int, n_test: int,
    overrides: tuple[str, ...] = (), name: str | None = None, ks: list[int] | None = None,
) -> dict:
    """Train (or resume) ``preset`` with ``overrides`` into ``out / name`` and evaluate it (ks: the run's own by default)."""
    run = out / (name or preset)
    config = elbolab.apply_overrides(
        elbolab.load_preset(preset), [f"train.epochs={epochs}", f"train.batch_size={batch_size}", *overrides]
    )
    ensure_trained(config, run, progress=False)
    result = elbolab.runs.read_eval(run)
    if result is None or result["n_examples"] != n_test or not evaluation_is_current(run):  # stale after more epochs
        result = elbolab.evaluate(run, n_images=n_test, ks=ks, progress=False)
    metrics = read_metrics(run)
    result["train_hours"] = sum(m["seconds"] for m in metrics) / 3600
    result["epochs"] = metrics[-1]["epoch"]
    return result


def print_table_head(budget: str, columns: list[str]) -> None:
    """The machine line, the budget line and a Markdown table header (used by the issue-4 benchmarks).

    A column name may hold an escaped pipe (``p(x \\| c)``): columns are counted from the list, not the text.
    """
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{budget}\n")
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/runs/quality"))
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every model (repeatable), e.g. train.compile=true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for preset in args.presets.split(","):
        start = time.perf_counter()
        result = train_and_evaluate(preset, args.out, args.epochs, args.batch_size, args.n_test, tuple(args.overrides))
        print(f"{preset}: done in {time.perf_counter() - start:.0f} s", flush=True)
        rows.append((preset, result))

    print_table_head(
        f"budget: {args.epochs} epochs of batch {args.batch_size} per model "
        f"({args.epochs / PAPER_EPOCHS:.1%} of the paper's {PAPER_EPOCHS} epochs); test on {args.n_test} images"
        + (f"; overrides: {' '.join(args.overrides)}" if args.overrides else ""),
        ["model", "epochs", "train h", "-log p(x) k=5000", "paper", "-L_1", "-L_5", "-L_50", "-L_5000", "gap",
         "active units", "eval s"],
    )
    for preset, r in rows:
        curve = r["bound_curve"]
        ll = r["log_likelihood"]
        print(
            f"| {preset} | {r['epochs']} | {r['train_hours']:.2f} | {-ll['mean']:.2f} +- {ll['se']:.2f} | "
            f"{PRESETS[preset]:.2f} | {-curve['1']['mean']:.2f} | {-curve['5']['mean']:.2f} | "
            f"{-curve['50']['mean']:.2f} | {-curve['5000']['mean']:.2f} | {r['gap']['mean']:.2f} | "
            f"{r['active_units']['count']} / {len(r['active_units']['cov'])} | {r['seconds']:.0f} |"
        )
    (args.out / f"summary-{'+'.join(p for p, _ in rows)}.json").write_text(json.dumps(dict(rows), indent=2))


if __name__ == "__main__":
    main()
