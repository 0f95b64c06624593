"""User mistakes and damaged files: a one-line error, and nothing the user had is lost (an audit of issue 2's surface)."""
import importlib
import json

import numpy as np
import pytest
import torch

import elbolab
from elbolab.config import apply_overrides, load_preset, load_toml
from elbolab.errors import ConfigError, DataError, RunError
from elbolab.runs import load, read_config, read_eval, read_metrics
from elbolab.tasks import resolve_device

from conftest import run_cli
from test_cli import one_line_error

train = importlib.import_module("elbolab.train").train


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.lr=-1", "train.lr must be a finite number > 0"),
    ("train.lr=nan", "train.lr must be a finite number > 0"),
    ("model.latent_dim=0", "model.latent_dim must be >= 1"),
    ("model.hidden=[200, 0]", "model.hidden must be a list of layer widths >= 1"),
    ("bound.beta=-1", "bound.beta must be >= 0"),
    ("bound.estimator='foo'", "bound.estimator must be one of reparam, stl, dreg"),
    ("eval.ks=[]", "eval.ks must be a non-empty list"),
    ("eval.k_chunk=0", "eval.k_chunk must be >= 1"),
    ("eval.active_threshold=-1", "eval.active_threshold must be >= 0"),
    ("train.eval_subset=-1", "train.eval_subset must be >= 0"),
])
def test_a_value_out_of_range_is_an_error_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        apply_overrides(load_preset("vae-digits"), [override])


def test_every_shipped_preset_is_in_range():
    for name in elbolab.config.preset_names():
        load_preset(name)


def test_a_zero_sized_model_from_the_command_line_is_one_line_and_leaves_no_run(tmp_path):
    result = run_cli("train", "--preset", "vae-digits", "--set", "model.latent_dim=0", "--out", str(tmp_path / "r"))
    one_line_error(result, "model.latent_dim must be >= 1, got 0")
    assert not (tmp_path / "r").exists()


def test_out_that_is_a_file_is_one_line_and_the_file_is_untouched(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    one_line_error(run_cli("train", "--preset", "vae-digits", "--out", str(afile)), "is a file or lies under one")
    one_line_error(run_cli("train", "--preset", "vae-digits", "--out", str(afile / "sub")), "is a file or lies under one")
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("name", ["mps", "meta", "xpu"])
def test_devices_other_than_cpu_and_cuda_are_refused(name):
    with pytest.raises(ConfigError, match="is not supported"):
        resolve_device(name)


def test_cpu_zero_is_the_cpu(tmp_path, tiny):
    assert resolve_device("cpu:0") == torch.device("cpu")
    run = train(tiny("train.epochs=1"), tmp_path / "r", progress=False)
    assert load(run, device="cpu:0").posterior(torch.zeros(1, 64)).mean.shape == (1, 8)  # not "damaged"


@pytest.fixture
def two_epochs(tmp_path, tiny):
    return train(tiny("train.epochs=2"), tmp_path / "run", progress=False)


def test_resume_keeps_every_good_metrics_record_around_a_damaged_line(two_epochs, tiny):
    path = two_epochs / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0][:50] + "\n" + lines[1] + "\nnull\n[1, 2]\n")  # line 1 damaged, two non-records
    assert [r["epoch"] for r in read_metrics(two_epochs)] == [2]
    train(tiny("train.epochs=3"), two_epochs, resume=True, progress=False)
    assert [r["epoch"] for r in read_metrics(two_epochs)] == [2, 3]


def test_resume_to_fewer_epochs_than_done_is_an_error_and_keeps_the_config(two_epochs, tiny):
    before = (two_epochs / "config.toml").read_text()
    with pytest.raises(RunError, match="already at epoch 2"):
        train(tiny("train.epochs=1"), two_epochs, resume=True, progress=False)
    assert (two_epochs / "config.toml").read_text() == before


def test_a_foreign_checkpoint_is_named_as_such_for_evaluate_and_resume(two_epochs, tiny):
    torch.save({"a": 1}, two_epochs / "checkpoint.pt")
    with pytest.raises(RunError, match="not an elbolab checkpoint"):
        load(two_epochs, which="last")
    with pytest.raises(RunError, match="not an elbolab checkpoint"):
        train(tiny("train.epochs=3"), two_epochs, resume=True, progress=False)


def test_a_checkpoint_without_training_state_cannot_be_resumed(two_epochs, tiny):
    weights = torch.load(two_epochs / "checkpoint.pt", weights_only=True)
    torch.save({"model_spec": weights["model_spec"], "model": weights["model"]}, two_epochs / "checkpoint.pt")
    with pytest.raises(RunError, match="holds no training state"):
        train(tiny("train.epochs=3"), two_epochs, resume=True, progress=False)


def test_resume_after_config_toml_was_edited_says_the_checkpoint_does_not_fit(two_epochs):
    path = two_epochs / "config.toml"
    path.write_text(path.read_text().replace("latent_dim = 8", "latent_dim = 9"))
    with pytest.raises(RunError, match="does not fit the model of"):
        train(read_config(two_epochs), two_epochs, resume=True, progress=False)


def test_a_damaged_eval_json_is_named_and_a_new_evaluation_rewrites_it(two_epochs):
    (two_epochs / "eval.json").write_text("{bad")
    with pytest.raises(RunError, match="eval.json is damaged"):
        read_eval(two_epochs)
    elbolab.evaluate(two_epochs, ks=[1, 5], n_images=20, progress=False)
    assert json.loads((two_epochs / "eval.json").read_text())["run"] == str(two_epochs)


def test_evaluate_chunk_of_zero_is_an_error_not_the_default(two_epochs):
    with pytest.raises(ConfigError, match="k_chunk must be >= 1"):
        elbolab.evaluate(two_epochs, ks=[1, 5], n_images=20, k_chunk=0, progress=False)


def test_a_failed_report_leaves_the_previous_reports_figures(two_epochs, tmp_path):
    from elbolab.report import write_report

    out = write_report([two_epochs], tmp_path / "rep" / "r.html")
    figures = {p: p.read_bytes() for p in (tmp_path / "rep" / "r_files").glob("*.png")}
    assert figures
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.toml").write_text((two_epochs / "config.toml").read_text())
    torch.save({"a": 1}, foreign / "checkpoint.pt")
    before = out.read_text()
    with pytest.raises(RunError, match="not an elbolab checkpoint"):
        write_report([two_epochs, foreign], out)
    assert out.read_text() == before
    assert {p: p.read_bytes() for p in figures} == figures


def test_train_and_test_images_of_different_sizes_are_a_data_error(tmp_path, tiny):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((40, 64), dtype=np.float32), x_test=rng.random((10, 60), dtype=np.float32))
    config = tiny(f"data.name='{tmp_path / 'd.npz'}'", "data.train_splits=['train']")
    with pytest.raises(DataError, match="training images have 64 pixels and test images 60"):
        train(config, tmp_path / "r", progress=False)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_toml(path)


def test_missing_data_leaves_no_run_directory(tmp_path, tiny):
    config = tiny(f"data.name='{tmp_path / 'absent.npz'}'")
    with pytest.raises(DataError):
        train(config, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_data_list_of_a_missing_directory_creates_nothing(tmp_path):
    result = run_cli("data", "list", "--data-dir", str(tmp_path / "typo"))
    assert result.returncode == 0, result.stderr
    assert "does not exist yet" in result.stdout and "(empty" in result.stdout
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("args,message", [
    (("train", "--presett", "vae-digits"), "No such option: --presett"),
    (("evaluate",), "Missing argument 'run'"),
    (("train", "--preset", "vae-digits", "--epochs", "abc"), "'--epochs'"),
    (("frobnicate",), "No such command 'frobnicate'"),
])
def test_a_malformed_command_line_is_one_line_naming_the_help_and_exit_code_2(args, message):
    result = run_cli(*args)
    command = "elbolab" if args[0] == "frobnicate" else args[0]  # 'elbolab train', or 'python -m elbolab train'
    one_line_error(result, message, f"{command} --help'")
    assert result.returncode == 2


def test_a_bare_command_group_prints_its_help():
    result = run_cli("data")
    assert result.returncode == 2 and "fetch" in result.stdout + result.stderr
