"""Collaborative filtering speed and memory at ML-20M's scale (issue 3), on synthetic interactions.

Synthetic data with ML-20M's shape after preprocessing (136,677 users,
20,108 items, ~10M clicks, power-law item popularity), split like ML-20M
(10,000 + 10,000 held-out users). Times Mult-VAE and RecVAE training steps at
batch 500 with the presets' settings (sparse CSR input: the first layer is a
gather-sum over the clicked items) and extrapolates seconds per epoch from
``--batches`` timed updates (an epoch is 234 updates for Mult-VAE, 4 x 234
for RecVAE's 3 encoder + 1 decoder passes); then full-ranking evaluation of
the 10,000 test users (NDCG@100, Recall@20/50, fold-in excluded), and the
peak RSS. With ``--breakdown`` it also times the parts of one update on one
batch (first layer, decoder, multinomial term, Adam) and a bare
[500, 600] x [600, I] product h W^T on MKL and on oneDNN (the kernel
``nets.Linear`` uses for it), whose GFLOP/s bound the decoder's three
matmuls (forward, input gradient, weight gradient).

With ``--epochs N`` it instead trains the ``mult-vae-ml20m`` preset for N
whole epochs through ``elbolab.train`` (the trainer the ``elbolab train``
command runs: shuffling, batching, the progress bar, metrics and a
checkpoint per epoch) and prints each epoch's ``train_seconds`` from
metrics.jsonl, with the best 2048^3 float32 matmul rate before and after as
the machine's speed at that moment (this shared machine's varies by 10-20%
from minute to minute).

    OMP_NUM_THREADS=2 python benchmarks/cf_speed.py --threads 2 --batches 20 --breakdown
    OMP_NUM_THREADS=2 python benchmarks/cf_speed.py --threads 2 --epochs 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import elbolab
from elbolab.config import apply_overrides, load_preset
from elbolab.data.interactions import liang_split, synthetic_interactions
from elbolab.ranking import rank_users, summarize
from elbolab.recommendation import RecommendationTask, model_scorer
from elbolab.runs import read_metrics
from elbolab.sparse import SparseLinear, l2_normalize_rows, multinomial_log_prob
from speed import matmul_backends, peak_matmul_gflops  # benchmarks/speed.py, beside this script


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def time_updates(task: RecommendationTask, n: int) -> tuple[float, float, int]:
    """Wall and CPU seconds per update (means over n, after one warm-up per phase) following the task's update
    plan, and updates per epoch. CPU seconds (this process, all threads) are less inflated by other processes'
    load than wall seconds: at 1 thread they are the update's compute cost on one core."""
    model = task.build_model()
    optimizers = task.optimizers(model)
    plan = task.update_plan(model)
    generator = torch.Generator().manual_seed(0)
    per_epoch = task.num_batches() * sum(p.passes for p in plan)
    seconds, cpu, count = 0.0, 0.0, 0
    for phase in plan:
        batches = task.batches(generator)
        for i in range(n // len(plan) + 1):
            batch = next(batches)
            start, start_cpu = time.perf_counter(), time.process_time()
            terms = task.loss(model, batch, 0, phase)
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            terms.loss().backward()
            optimizers[phase.optimizer].step()
            if i > 0:  # the first update of a phase warms up allocators
                seconds += time.perf_counter() - start
                cpu += time.process_time() - start_cpu
                count += 1
    return seconds / count, cpu / count, per_epoch


def seconds_of(fn, repeats: int = 3) -> dict[str, float]:
    """Mean wall and CPU seconds of fn() over ``repeats`` calls after one warm-up call."""
    fn()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return {"wall": (time.perf_counter() - start) / repeats, "cpu": (time.process_time() - start_cpu) / repeats}


def breakdown(task: RecommendationTask) -> dict:
    """Wall and CPU seconds of each part of one update on one batch (each forward + backward in isolation), and
    the rate of a bare [B, 600] x [600, I] matmul (GFLOP per wall second and per CPU second)."""
    model = task.build_model()
    x, _ = next(task.batches(torch.Generator().manual_seed(0)))
    first = next(m for m in model.encoder.modules() if isinstance(m, SparseLinear))
    z = torch.randn(x.shape[0], model.latent_dim, requires_grad=True)  # [B, latent]
    logits = torch.randn(x.shape[0], x.shape[1], requires_grad=True)  # [B, I]

    def first_layer():
        model.zero_grad(set_to_none=True)
        first(l2_normalize_rows(x)).sum().backward()

    def decoder():
        model.zero_grad(set_to_none=True)
        model.decoder(z).sum().backward()

    def multinomial():
        logits.grad = None
        multinomial_log_prob(logits, x).sum().backward()

    parts = {"first_layer_fwd_bwd": seconds_of(first_layer), "decoder_fwd_bwd": seconds_of(decoder),
             "multinomial_fwd_bwd": seconds_of(multinomial)}
    optimizers = task.optimizers(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    parts["adam_step_all_params"] = seconds_of(lambda: [opt.step() for opt in optimizers.values()])
    h, w = torch.randn(x.shape[0], 600), torch.randn(x.shape[1], 600)  # the decoder's last layer: h W^T
    flops = 2 * h.shape[0] * h.shape[1] * w.shape[0]
    for name, mm in matmul_backends().items():
        matmul = seconds_of(lambda: mm(h, w))
        parts[f"matmul_500x600xI_{name}"] = matmul
        parts[f"matmul_gflop_per_second_{name}"] = {k: flops / v / 1e9 for k, v in matmul.items()}
    return {"n_parameters": sum(p.numel() for p in model.parameters()), **parts}


def whole_epochs(epochs: int) -> dict:
    """Train mult-vae-ml20m on the synthetic data for ``epochs`` epochs with elbolab.train; seconds per epoch."""
    config = apply_overrides(load_preset("mult-vae-ml20m"), ["data.name='synthetic-ml20m'", f"train.epochs={epochs}"])
    before = peak_matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        run = elbolab.train(config, Path(tmp) / "run", progress=False)
        records = read_metrics(run)
    seconds = [r["train_seconds"] for r in records]
    return {"model": "mult-vae-ml20m", "epochs": epochs, "train_seconds": seconds,
            "median_train_seconds": statistics.median(seconds),
            "validation_seconds": [r["seconds"] - r["train_seconds"] for r in records],
            "valid_ndcg@100": [r["valid_ndcg@100"] for r in records],
            "matmul_gflops_before_after": [before, peak_matmul_gflops()], "peak_rss_gib": peak_rss_gib(),
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=20, help="timed updates per model")
    parser.add_argument("--eval-users", type=int, default=10_000)
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of one update")
    parser.add_argument("--epochs", type=int, default=0, help="train Mult-VAE this many whole epochs instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    elbolab.reuse_freed_memory()  # as the elbolab command does
    if args.epochs:
        print(json.dumps({"threads": args.threads, **whole_epochs(args.epochs)}), flush=True)
        return
    out = {"threads": args.threads, "load_average": os.getloadavg()}

    start = time.perf_counter()
    data = synthetic_interactions()
    split = liang_split(data, heldout_users=10_000)
    out["data_seconds"] = time.perf_counter() - start
    out["counts"] = split.counts()
    out["interactions"] = len(data)
    del data
    print(json.dumps(out), flush=True)

    for preset in ("mult-vae-ml20m", "recvae-ml20m"):
        config = apply_overrides(load_preset(preset), ["data.name='synthetic-ml20m'"])
        task = RecommendationTask(config, split=split)
        per_update, cpu_per_update, per_epoch = time_updates(task, args.batches)
        row = {"model": preset, "seconds_per_update": per_update, "cpu_seconds_per_update": cpu_per_update,
               "updates_per_epoch": per_epoch, "seconds_per_epoch_extrapolated": per_update * per_epoch,
               "cpu_seconds_per_epoch_extrapolated": cpu_per_update * per_epoch, "timed_updates": args.batches,
               "peak_rss_gib": peak_rss_gib(), "load_average": os.getloadavg()}
        if args.breakdown:
            row["breakdown"] = breakdown(task)
            row["load_average_after_breakdown"] = os.getloadavg()
        print(json.dumps(row), flush=True)

    config = apply_overrides(load_preset("mult-vae-ml20m"), ["data.name='synthetic-ml20m'"])
    task = RecommendationTask(config, split=split)
    model = task.build_model().eval()
    start = time.perf_counter()
    per_user, skipped = rank_users(model_scorer(model, torch.device("cpu")), split.test_in, split.test_out,
                                   batch_size=1000, n_users=args.eval_users)
    seconds = time.perf_counter() - start
    metrics = summarize(per_user, skipped)
    print(json.dumps({"evaluation_users": args.eval_users, "evaluation_seconds": seconds,
                      "users_scored": metrics["users"], "skipped_users": skipped,
                      "peak_rss_gib": peak_rss_gib(), "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
