"""Data-parallel throughput on this machine, 1 vs 2 processes, and what scaling out would cost (issue 7).

    python benchmarks/ddp_throughput.py [--steps 300,10] [--models vae-mnist,mult-vae-ml20m]

For each model it times its number of ``--steps`` updates of the trainer's own update
(``elbolab.train.update``: shard the global batch, DDP backward, Adam step;
batch production included) after 2 warm-up updates, in one process with 2
threads (the whole machine), in one process with 1 thread (what each rank
gets), and in 2 gloo processes of 1 thread each under torchrun (the same
global batch of the preset: 20 images for the VAE, as in the IWAE paper, 500 users for Mult-VAE). Mult-VAE
runs on the synthetic ML-20M-shaped data (136,677 users, 20,108 items).

It also times the sharded test-time job of each model in both layouts: the
k = 5,000 log-likelihood of 200 test images (VAE) and the full ranking of
the 10,000 test users (Mult-VAE). Per model it reports what the scaling estimate in docs/results.md
needs: the FLOPs of one update (torch.utils.flop_counter over forward and
backward), the gradient bytes DDP all-reduces per update (4 bytes x
parameters), and the measured time of a gloo all_reduce of that many floats
between the 2 processes. From those two measured quantities and stated GPU
assumptions (``--gpu-tflops``, ``--nvlink-gbs``, ``--ib-gbs``) it prints the
estimate of a Mult-VAE ML-20M epoch on 1, 8 and 64 GPUs: compute time =
FLOPs / achieved throughput, ring all-reduce time = 2 (N - 1) / N x bytes /
bus bandwidth (NVLink inside one 8-GPU node, InfiniBand between nodes),
without and with DDP's overlap of communication and backward.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from elbolab import distributed
from elbolab.config import apply_overrides, load_preset
from elbolab.evaluate import dissect
from elbolab.tasks import make_task
from elbolab.train import Phase, make_optimizer, objective_module, update

MODELS = ("vae-mnist", "mult-vae-ml20m")


def build(preset: str):
    """The task of a preset (Mult-VAE on the synthetic ML-20M-shaped data) with its model, optimizers and plan."""
    overrides = ["data.name='synthetic-ml20m'"] if preset.startswith("mult-") else []
    config = apply_overrides(load_preset(preset), ["train.eval_subset=0", *overrides])
    torch.manual_seed(0)
    task = make_task(config, "cpu")
    model = task.build_model()
    planned = hasattr(task, "update_plan")
    optimizers = task.optimizers(model) if hasattr(task, "optimizers") else {"all": make_optimizer(model, config)}
    phase = task.update_plan(model)[0] if planned else Phase()
    return task, model, optimizers, phase, planned


def flops_per_update(task, model, optimizers, phase, planned) -> float:
    """FLOPs of one update's forward and backward, as torch's flop counter sees them (matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = next(task.batches(torch.Generator().manual_seed(1)))
    counter = FlopCounterMode(display=False)
    with counter:
        update(objective_module(model, task, planned), optimizers, phase, batch, 0)
    return float(counter.get_total_flops())


def worker(preset: str, steps: int) -> dict:
    """Time ``steps`` updates on this rank (all ranks in step); rank 0 returns the numbers."""
    distributed.init(torch.device("cpu"))
    task, model, optimizers, phase, planned = build(preset)
    world = distributed.world_size()
    out: dict = {"model": preset, "world_size": world, "threads": torch.get_num_threads()}
    if world == 1:
        out["flops_per_update"] = flops_per_update(task, model, optimizers, phase, planned)
    objective = objective_module(model, task, planned)
    batches = task.batches(torch.Generator().manual_seed(0))
    rows = 0
    for i in range(steps + 2):
        if i == 2:
            distributed.barrier()
            start, rows = time.perf_counter(), 0
        batch = next(batches)
        rows += distributed.batch_rows(batch)
        update(objective, optimizers, phase, batch, i)
    distributed.barrier()
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out.update(seconds_per_update=seconds / steps, examples_per_second=rows / seconds,
               batch=distributed.batch_rows(batch), parameters=n_params, allreduce_bytes=4 * n_params)
    out["eval_seconds"], out["eval_what"] = time_evaluation(task, model)
    if world > 1:
        flat = torch.zeros(n_params)
        for _ in range(2):
            distributed.all_reduce_sum(flat)
        distributed.barrier()
        start = time.perf_counter()
        for _ in range(5):
            distributed.all_reduce_sum(flat)
        out["allreduce_seconds"] = (time.perf_counter() - start) / 5
    return out


def time_evaluation(task, model) -> tuple[float, str]:
    """Seconds of the sharded test-time job: the k = 5,000 log-likelihood of 200 test images, or the full ranking of the test users."""
    distributed.barrier()
    start = time.perf_counter()
    if hasattr(task, "split"):
        task.test_metrics(model)
        what = f"full ranking of {task.num_test_examples():,} test users"
    else:
        dissect(model, task.test_batches(10, 200), ks=[1, 5000], k_chunk=250)
        what = "log p(x) at k = 5,000 of 200 test images"
    distributed.barrier()
    return time.perf_counter() - start, what


def run(preset: str, nproc: int, steps: int, threads: int | None = None) -> dict:
    """One measurement in a fresh process tree: ``nproc`` ranks of ``threads`` (default: cores // nproc) threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        args = [__file__, "--worker", preset, "--steps", str(steps), "--result", str(result)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads or max(1, (os.cpu_count() or 2) // nproc))}
        if nproc == 1:
            command = [sys.executable, *args]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
        subprocess.run(command, env=env, check=True)
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="300,10", help="timed updates per measurement, one per model")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--gpu-tflops", type=float, default=10.0, help="achieved fp32 TFLOP/s per GPU (assumption)")
    parser.add_argument("--nvlink-gbs", type=float, default=150.0, help="all-reduce bus bandwidth in a node, GB/s")
    parser.add_argument("--ib-gbs", type=float, default=20.0, help="all-reduce bus bandwidth across nodes, GB/s")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        out = worker(args.worker, int(args.steps))
        if distributed.is_main():
            Path(args.result).write_text(json.dumps(out))
        distributed.leave(0)  # a rank ends here; a one-process worker returns
        return

    load = os.getloadavg()[0]
    models = args.models.split(",")
    steps = [int(n) for n in args.steps.split(",")]
    steps += [steps[-1]] * (len(models) - len(steps))
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, timed updates {dict(zip(models, steps))}; load average {load:.2f}")
    print()
    print("| model | processes x threads | global batch | s / update | examples / s | speed-up | "
          "GFLOP / update | all-reduce MB / update | gloo all-reduce s (2 ranks) |")
    print("|---|---|---|---|---|---|---|---|---|")
    estimates, evaluations = [], []
    for preset, n in zip(models, steps):
        one = run(preset, 1, n)
        single = run(preset, 1, n, threads=1)  # the worker the 2 ranks each are
        two = run(preset, 2, n)
        for r in (one, single, two):
            print(f"| {preset} | {r['world_size']} x {r['threads']} | {r['batch']} | {r['seconds_per_update']:.4f} | "
                  f"{r['examples_per_second']:,.0f} | {r['examples_per_second'] / one['examples_per_second']:.2f}x | "
                  f"{one['flops_per_update'] / 1e9:.2f} | {r['allreduce_bytes'] / 1e6:.1f} | "
                  f"{r.get('allreduce_seconds', float('nan')):.4f} |", flush=True)
        evaluations.append((preset, one, single, two))
        if preset.startswith("mult-"):
            estimates.append((preset, one))
    print("\n| model | test-time job | 1 x 2 threads s | 1 x 1 thread s | 2 x 1 thread s | 2 x 1 vs 1 x 2 | 2 x 1 vs 1 x 1 |")
    print("|---|---|---|---|---|---|---|")
    for preset, one, single, two in evaluations:
        print(f"| {preset} | {one['eval_what']} | {one['eval_seconds']:.1f} | {single['eval_seconds']:.1f} | "
              f"{two['eval_seconds']:.1f} | {one['eval_seconds'] / two['eval_seconds']:.2f}x | "
              f"{single['eval_seconds'] / two['eval_seconds']:.2f}x |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    for preset, one in estimates:
        print()
        print(scaling_estimate(preset, one, args.gpu_tflops, args.nvlink_gbs, args.ib_gbs))


def scaling_estimate(preset: str, one: dict, tflops: float, nvlink_gbs: float, ib_gbs: float) -> str:
    """Seconds per epoch on N GPUs from the measured FLOPs and all-reduce bytes of one update (see the docstring)."""
    users = 116_677  # training users of ML-20M after Liang et al.'s preprocessing
    batch, flops, volume = one["batch"], one["flops_per_update"], one["allreduce_bytes"]
    lines = [f"{preset}: estimate for ML-20M ({users:,} training users), {flops / 1e9:.1f} GFLOP and "
             f"{volume / 1e6:.1f} MB of gradients per update of {batch}; assumed {tflops} TFLOP/s achieved per GPU, "
             f"ring all-reduce at {nvlink_gbs} GB/s in a node (NVLink), {ib_gbs} GB/s across nodes (InfiniBand)",
             "", "| GPUs | scaling | global batch | updates / epoch | compute ms / update | all-reduce ms / update "
             "| s / epoch (no overlap) | s / epoch (full overlap) | speed-up vs 1 GPU (overlap) |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = None
    for n in (1, 8, 64):
        for scaling, global_batch in (("strong", batch), ("weak", batch * n)):
            if n == 1 and scaling == "weak":
                continue
            updates = -(-users // global_batch)
            compute = flops * (global_batch / n) / batch / (tflops * 1e12)
            bandwidth = (nvlink_gbs if n <= 8 else ib_gbs) * 1e9
            comm = 2 * (n - 1) / n * volume / bandwidth
            no_overlap, overlap = updates * (compute + comm), updates * max(compute, comm)
            base = base or overlap
            lines.append(f"| {n} | {scaling} | {global_batch:,} | {updates} | {compute * 1e3:.2f} | {comm * 1e3:.2f} | "
                         f"{no_overlap:.2f} | {overlap:.2f} | {base / overlap:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
