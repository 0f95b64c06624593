"""The command line as a user meets it: real subprocesses and typer's CliRunner."""
import numpy as np
import pytest
from typer.testing import CliRunner

from elbolab.cli import app

from conftest import run_cli

runner = CliRunner()


def one_line_error(result, *needles):
    """A user error: non-zero exit, one line on stderr starting with 'elbolab: error:', no traceback."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("elbolab: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_evaluate_compare_end_to_end(tmp_path):
    out = tmp_path / "run"
    trained = run_cli("train", "--preset", "vae-digits", "--epochs", "2", "--out", str(out), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert (out / "config.toml").is_file() and (out / "checkpoint.pt").is_file()
    evaluated = run_cli("evaluate", str(out), "--ks", "1,5,50", "--n-images", "30", "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "log p(x) (k=50)" in evaluated.stdout and "active units" in evaluated.stdout
    compared = runner.invoke(app, ["compare", str(out), "--format", "csv"])
    assert compared.exit_code == 0 and "log_p(x)" in compared.output


def test_unknown_preset(tmp_path):
    one_line_error(run_cli("train", "--preset", "vae-mnits", "--out", str(tmp_path / "r")), "unknown preset 'vae-mnits'")


def test_unknown_set_key(tmp_path):
    result = run_cli("train", "--preset", "vae-digits", "--set", "model.latnt_dim=3", "--out", str(tmp_path / "r"))
    one_line_error(result, "model.latnt_dim")
    assert not (tmp_path / "r").exists()


def test_nan_in_data(tmp_path):
    x = np.random.default_rng(0).random((20, 16), dtype=np.float32)
    x[3, 5] = np.nan
    np.savez(tmp_path / "bad.npz", x_train=x, x_test=x[:5] * 0)
    result = run_cli(
        "train", "--preset", "vae-digits", "--set", f"data.name='{tmp_path / 'bad.npz'}'",
        "--set", "train_splits=['train']", "--out", str(tmp_path / "r"),
    )
    one_line_error(result, "NaN", "x_train")


def test_cuda_without_gpu_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("train", "--preset", "vae-digits", "--device", "cuda", "--out", str(tmp_path / "r"))
    one_line_error(result, "no usable CUDA GPU")


def test_evaluate_a_directory_that_is_not_a_run(tmp_path):
    one_line_error(run_cli("evaluate", str(tmp_path)), "not a run directory")


def test_cli_runner_reports_errors_in_process(tmp_path):
    result = runner.invoke(app, ["train", "--preset", "nope", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "unknown preset" in result.output


def test_presets_and_data_list(tmp_path):
    listed = runner.invoke(app, ["presets"])
    assert listed.exit_code == 0 and "iwae-mnist-k50" in listed.output
    cached = runner.invoke(app, ["data", "list", "--data-dir", str(tmp_path)])
    assert cached.exit_code == 0 and "empty" in cached.output


def test_flags_show_no_value_placeholder_in_help():
    result = run_cli("train", "--help", env={"COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if any(f in line for f in ("--resume ", "--no-progress", "--help "))]
    assert len(lines) >= 3 and not any("<bool>" in line for line in lines), lines
    assert "<int>" in next(line for line in result.stdout.splitlines() if "--epochs" in line)  # valued options keep theirs
