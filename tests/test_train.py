"""The trainer: a tiny real model learns, resume is exact, a NaN stops cleanly."""
import json
import signal
import time

import pytest
import torch

from elbolab.errors import RunError, TrainingError
from elbolab.runs import load, load_checkpoint, read_metrics
from elbolab.tasks import ImageTask
from elbolab.train import train

from conftest import run_cli, tiny_config


def test_tiny_model_learns(tmp_path):
    run = train(tiny_config("train.epochs=8"), tmp_path / "run", progress=False)
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == list(range(1, 9))
    # The bound rises: the last epoch beats the first on train and held-out test images.
    assert metrics[-1]["train_bound"] > metrics[0]["train_bound"] + 2.0
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"] + 1.0
    for key in ("train_reconstruction", "train_kl", "beta", "test_elbo", "seconds"):
        assert key in metrics[0]


def _same_checkpoints(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["step"] == cb["step"] and ca["epoch"] == cb["epoch"]
    for name, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][name]), name
    ma = [{k: v for k, v in m.items() if "seconds" not in k} for m in read_metrics(a)]
    mb = [{k: v for k, v in m.items() if "seconds" not in k} for m in read_metrics(b)]
    assert ma == mb


def test_resume_equals_uninterrupted(tmp_path):
    config = tiny_config("train.epochs=4", "bound.name='iwae'", "bound.k=3")
    train(config, tmp_path / "straight", progress=False)
    half = tiny_config("train.epochs=2", "bound.name='iwae'", "bound.k=3")
    train(half, tmp_path / "resumed", progress=False)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    _same_checkpoints(tmp_path / "straight", tmp_path / "resumed")


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    """SIGKILL a real training process mid-run, resume it, compare with a run never interrupted."""
    import subprocess

    from conftest import elbolab_cmd

    killed = tmp_path / "killed"
    args = ["train", "--preset", "vae-digits", "--epochs", "500", "--no-progress", "--set", "eval_subset=0"]
    proc = subprocess.Popen([*elbolab_cmd(), *args, "--out", str(killed)], env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while len(read_metrics(killed)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(killed)["epoch"]
    assert 2 <= done < 500, "the process should have been killed mid-run"  # metrics lead the checkpoint by <= 1 epoch
    target = done + 3
    resumed = run_cli("train", "--resume", "--out", str(killed), "--epochs", str(target), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    straight = run_cli(*args[:3], "--epochs", str(target), "--no-progress", "--set", "eval_subset=0", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    _same_checkpoints(killed, tmp_path / "straight")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    config = tiny_config("train.epochs=3")
    steps_per_epoch = ImageTask(config).num_batches()
    original = ImageTask.loss

    def poisoned(self, model, batch, step):
        terms = original(self, model, batch, step)
        if step == steps_per_epoch + 4:  # fifth batch of the second epoch
            return type(terms)(terms.value * float("nan"), terms.reconstruction, terms.kl, terms.log_weights, terms.beta, terms.k)
        return terms

    monkeypatch.setattr(ImageTask, "loss", poisoned)
    with pytest.raises(TrainingError, match=f"step {steps_per_epoch + 5} \\(epoch 2, batch 5\\)"):
        train(config, tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert load(tmp_path / "run") is not None


def test_existing_run_is_not_overwritten(tmp_path):
    train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunError, match="already holds a trained run"):
        train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_a_changed_config(tmp_path):
    train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="cannot change train.lr"):
        train(tiny_config("train.epochs=2", "train.lr=0.1"), tmp_path / "run", resume=True, progress=False)


def test_load_returns_a_model_ready_for_the_contract(tmp_path):
    run = train(tiny_config("train.epochs=1"), tmp_path / "run", progress=False)
    model = load(run)
    x = torch.bernoulli(torch.full((3, 64), 0.3))
    assert model.posterior(x).mean.shape == (3, 8)
    assert model.likelihood(model.prior().sample((3,))).mean.shape == (3, 64)
    assert model.log_weights(x, k=4).log_w.shape == (4, 3)
    assert not model.training
    json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
