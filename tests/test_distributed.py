"""Distributed training and evaluation (issue 7): 2 gloo ranks on CPU against one process, on tiny real data.

Each ``--nproc 2`` run here is a real torchrun launch of two processes.
Tolerances: a deterministic model (Mult-DAE without input dropout) must
give the one-process weights to 1e-5 (sums are taken in a different order
across ranks); everything that is a function of the seed (resume, sharded
evaluation, step counts, beta) must be identical.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from elbolab import distributed
from elbolab.cli import app
from elbolab.config import dump_toml
from elbolab.evaluate import evaluate
from elbolab.runs import load_checkpoint, read_metrics
from elbolab.sparse import to_torch_csr
from elbolab.train import train

from conftest import elbolab_cmd, run_cli, tiny_config
from test_recommendation import cf_config


def _config_file(tmp_path: Path, config, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(config))
    return path


def _train_2(config_file: Path, out: Path, *extra: str):
    result = run_cli("train", "--config", str(config_file), "--out", str(out), "--no-progress", "--nproc", "2", *extra)
    assert result.returncode == 0, result.stderr
    return result


def _max_weight_difference(run_a: Path, run_b: Path) -> float:
    a, b = load_checkpoint(run_a)["model"], load_checkpoint(run_b)["model"]
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


# --------------------------------------------------------------------------- shards (no processes)


def test_shards_cover_every_row_once_and_csr_shards_equal_dense_ones():
    for n in (0, 1, 7, 45):
        for size in (1, 2, 3):
            ranges = [distributed.shard_range(n, r, size) for r in range(size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert max(hi - lo for lo, hi in ranges) - min(hi - lo for lo, hi in ranges) <= 1
    rows = sp.random(9, 6, density=0.4, format="csr", random_state=0)
    x = to_torch_csr(rows)
    dense = torch.from_numpy(rows.toarray()).float()
    for r in range(2):
        part, dense_part = distributed.shard((x, None), r, 2), distributed.shard(dense, r, 2)
        assert part[1] is None
        assert torch.equal(part[0].to_dense(), dense_part)


# --------------------------------------------------------------------------- training


def test_two_ranks_take_the_one_process_updates(tmp_path):
    """Deterministic Mult-DAE (no input dropout), global batch 45 over 120 users: 45, 45, 30 -> shards 22 / 23 and 15 / 15."""
    config = cf_config(tmp_path, "mult-dae-ml100k", "corruption='none'", "train.epochs=3", "train.batch_size=45")
    one = train(config, tmp_path / "one", progress=False)
    two = tmp_path / "two"
    _train_2(_config_file(tmp_path, config, "dae"), two)
    assert _max_weight_difference(one, two) < 1e-5
    m1, m2 = read_metrics(one), read_metrics(two)
    assert [m["step"] for m in m1] == [m["step"] for m in m2] == [3, 6, 9]
    assert all(m["world_size"] == 2 for m in m2)
    np.testing.assert_allclose([m["train_bound"] for m in m2], [m["train_bound"] for m in m1], rtol=1e-5)
    np.testing.assert_allclose([m["valid_ndcg@100"] for m in m2], [m["valid_ndcg@100"] for m in m1], rtol=1e-6)
    # full-ranking test metrics sharded over 2 ranks = one process
    assert run_cli("evaluate", str(two), "--no-progress", "--nproc", "2").returncode == 0
    sharded = json.loads((two / "eval.json").read_text())["task_metrics"]
    single = evaluate(two, progress=False)["task_metrics"]
    for key in ("ndcg@100", "recall@20", "recall@50"):
        assert sharded[key]["mean"] == pytest.approx(single[key]["mean"], abs=1e-12)
    assert sharded["users"] == single["users"] and sharded["skipped_users"] == single["skipped_users"]


@pytest.mark.parametrize("preset", ["mult-vae-ml100k", "recvae-ml100k"])
def test_two_ranks_count_steps_and_anneal_beta_globally(tmp_path, preset):
    """Mult-VAE's beta annealing and RecVAE's alternating passes follow the one-process schedule of global steps."""
    config = cf_config(tmp_path, preset, "train.epochs=2", "train.encoder_passes=2")
    one = train(config, tmp_path / "one", progress=False)
    two = tmp_path / "two"
    _train_2(_config_file(tmp_path, config, preset), two)
    m1, m2 = read_metrics(one), read_metrics(two)
    assert [m["step"] for m in m2] == [m["step"] for m in m1]
    assert [m["beta"] for m in m2] == [m["beta"] for m in m1]
    assert load_checkpoint(two)["step"] == load_checkpoint(one)["step"]


def test_resume_under_ddp_equals_an_uninterrupted_ddp_run(tmp_path):
    config = tiny_config("train.epochs=2")
    file = _config_file(tmp_path, config, "vae")
    _train_2(file, tmp_path / "full")
    _train_2(file, tmp_path / "part", "--epochs", "1")
    result = run_cli("train", "--out", str(tmp_path / "part"), "--resume", "--epochs", "2", "--no-progress", "--nproc", "2")
    assert result.returncode == 0, result.stderr
    assert _max_weight_difference(tmp_path / "full", tmp_path / "part") == 0.0
    full, part = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [m["train_bound"] for m in full] == [m["train_bound"] for m in part]
    assert len(load_checkpoint(tmp_path / "full")["rng"]["torch_ranks"]) == 2


# --------------------------------------------------------------------------- evaluation


def test_sharded_evaluation_gives_the_one_process_numbers(tmp_path):
    run = train(tiny_config("train.epochs=1", "eval.batch_size=7"), tmp_path / "run", progress=False)
    single = evaluate(run, progress=False)
    result = run_cli("evaluate", str(run), "--no-progress", "--nproc", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("test examples (nats)") == 1  # rank 0 prints the table, once
    sharded = json.loads((run / "eval.json").read_text())
    assert sharded["n_examples"] == single["n_examples"] == 50
    for key in ("elbo", "reconstruction", "kl", "log_likelihood", "gap"):
        assert sharded[key]["mean"] == pytest.approx(single[key]["mean"], abs=1e-9)
    for k, stat in single["bound_curve"].items():
        assert sharded["bound_curve"][k]["mean"] == pytest.approx(stat["mean"], abs=1e-9)
    assert sharded["active_units"]["cov"] == pytest.approx(single["active_units"]["cov"], abs=1e-12)


# --------------------------------------------------------------------------- failures


def _worker_pids(tag: str, rank: str) -> list[int]:
    """PIDs of the torchrun workers of this test (environment tagged) with RANK = rank."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, UnicodeDecodeError):
            continue
        if env.get("ELBOLAB_TEST_TAG") == tag and env.get("RANK") == rank and "LOCAL_RANK" in env:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_dying_rank_ends_the_job_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    file = _config_file(tmp_path, tiny_config("train.epochs=500"), "vae")
    run, tag = tmp_path / "run", uuid.uuid4().hex
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ELBOLAB_TEST_TAG": tag}
    job = subprocess.Popen([*elbolab_cmd(), "train", "--config", str(file), "--out", str(run), "--no-progress",
                            "--nproc", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists():
        assert job.poll() is None and time.time() < deadline, "the 2-rank run never wrote its first checkpoint"
        time.sleep(0.2)
    pids = _worker_pids(tag, "1")
    assert pids, "rank 1 not found"
    os.kill(pids[0], signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("elbolab: error: distributed training failed") and "intact" in last
    checkpoint = load_checkpoint(run)  # complete and loadable
    assert 1 <= checkpoint["epoch"] < 500
    assert len(read_metrics(run)) >= checkpoint["epoch"]


def test_bf16_and_cuda_are_refused_on_a_machine_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    runner = CliRunner()
    for flags in (["--precision", "bf16"], ["--device", "cuda"]):
        result = runner.invoke(app, ["train", "--preset", "vae-digits", "--out", str(tmp_path / "r"), *flags])
        assert result.exit_code == 1
        assert "GPU" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--preset", "vae-digits", "--out", str(tmp_path / "r"), "--precision", "fp8"])
    assert result.exit_code == 1 and "unknown precision" in result.output
    assert not (tmp_path / "r").exists()  # nothing written for a refused run
