"""train.compile / eval.compile (issue 2, speed): the same numbers as eager, exact resume, a clear error when compile fails."""
import pytest
import torch

from elbolab.bounds import _chunk_log_weights, importance_sample
from elbolab.errors import ConfigError
from elbolab.runs import load, load_checkpoint
from elbolab.tasks import make_task
from elbolab.train import train

from conftest import tiny_config


def _params(run):
    return load_checkpoint(run)["model"]


def test_compiled_training_matches_eager_and_resumes_exactly(tmp_path):
    iwae = ("bound.name='iwae'", "bound.k=3", "bound.estimator='dreg'", "train.eval_subset=0")
    train(tiny_config("train.epochs=2", *iwae), tmp_path / "eager", progress=False)
    compiled = tiny_config("train.epochs=2", "train.compile=true", *iwae)
    train(compiled, tmp_path / "straight", progress=False)
    train(tiny_config("train.epochs=1", "train.compile=true", *iwae), tmp_path / "resumed", progress=False)
    train(compiled, tmp_path / "resumed", resume=True, progress=False)
    eager, straight, resumed = _params(tmp_path / "eager"), _params(tmp_path / "straight"), _params(tmp_path / "resumed")
    for name in eager:
        assert torch.equal(straight[name], resumed[name]), name  # resume is exact under compile too
        # Same random draws (fallback_random), so compiled and eager differ by rounding only.
        torch.testing.assert_close(straight[name], eager[name], rtol=1e-4, atol=1e-4)


def test_compiled_importance_sample_matches_eager(tmp_path):
    run = train(tiny_config("train.epochs=1", "train.eval_subset=0"), tmp_path / "run", progress=False)
    model = load(run).eval()
    x = torch.bernoulli(torch.full((6, model.data_dim), 0.3), generator=torch.Generator().manual_seed(1))
    results = []
    for compile in (False, True):
        torch.manual_seed(0)
        results.append(importance_sample(model, x, k=40, k_chunk=20, compile=compile))
    eager, fast = results
    for name in ("value", "reconstruction", "kl", "log_weights"):
        torch.testing.assert_close(getattr(fast, name), getattr(eager, name), rtol=1e-4, atol=1e-3)


def test_compile_failure_is_a_one_line_config_error(tmp_path):
    """A machine without a working C++ compiler: inductor fails, the trainer says how to turn compile off."""
    import torch._inductor.config as inductor

    # inductor's own patch, not monkeypatch: monkeypatch's undo deletes the config key and breaks later compiles
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
        with pytest.raises(ConfigError, match=r"train\.compile=false") as error:
            train(tiny_config("train.epochs=1", "train.compile=true", "bound.k=2"), tmp_path / "run", progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_evaluate_compile_flag_overrides_the_run_config(tmp_path, monkeypatch):
    """`elbolab evaluate RUN --compile` fuses the log-weights of a run trained without eval.compile, and only then."""
    import importlib

    from typer.testing import CliRunner

    from elbolab.cli import app

    evaluate_module = importlib.import_module("elbolab.evaluate")  # the package exports a function of that name

    run = train(tiny_config("train.epochs=1", "train.eval_subset=0"), tmp_path / "run", progress=False)
    seen, real = [], evaluate_module.dissect
    monkeypatch.setattr(evaluate_module, "dissect", lambda *a, **kw: seen.append(kw["compile"]) or real(*a, **kw))
    for flags in (["--compile"], []):
        result = CliRunner().invoke(app, ["evaluate", str(run), "--ks", "1,4", "--n-images", "6", "--no-progress", *flags])
        assert result.exit_code == 0, result.output
        assert "log p(x) (k=4)" in result.output
    assert seen == [True, False]


@pytest.mark.parametrize("bound", [("bound.name='elbo'", "bound.k=1"), ("bound.name='iwae'", "bound.k=3")])
def test_training_loss_compiles_to_one_graph(bound):
    """No graph break in the compiled loss (one was in kl_divergence's dispatch and split every VAE step in three)."""
    task = make_task(tiny_config(*bound), torch.device("cpu"))
    model = task.build_model()
    batch = next(iter(task.batches(torch.Generator().manual_seed(0))))
    explanation = torch._dynamo.explain(task.loss)(model, batch, 0)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    # eval.compile's graph: the k-sample log-weights of a chunk
    explanation = torch._dynamo.explain(_chunk_log_weights)(model.eval(), batch[0], None, 4)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_auto_compiles_only_on_a_cpu_with_a_compiler_and_enough_samples():
    """eval.compile = "auto": compile where the ~20 s compile pays (AUTO_MIN_SAMPLES), never without a C++ compiler."""
    import torch._inductor.config as inductor

    from elbolab.compiled import AUTO_MIN_SAMPLES, cpp_compiler, should_compile

    cpu = torch.device("cpu")
    assert should_compile(True, cpu, 1) and not should_compile(False, cpu, 10**9)
    assert not should_compile("auto", cpu, AUTO_MIN_SAMPLES - 1)
    assert not should_compile("auto", torch.device("cuda"), AUTO_MIN_SAMPLES)
    assert should_compile("auto", cpu, AUTO_MIN_SAMPLES) == (cpp_compiler() is not None)
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        assert cpp_compiler() is None
        assert not should_compile("auto", cpu, 10**9)


def test_auto_compile_that_fails_warns_and_runs_eagerly_with_the_same_draws(tmp_path, capfd):
    """Under "auto" a failed compile is a one-line warning; the result is the eager one, draw for draw."""
    import torch._inductor.config as inductor

    from elbolab.bounds import _compiled_chunk

    run = train(tiny_config("train.epochs=1", "train.eval_subset=0"), tmp_path / "run", progress=False)
    model = load(run).eval()
    x = torch.bernoulli(torch.full((5, model.data_dim), 0.3), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    eager = importance_sample(model, x, k=30, k_chunk=10)
    _compiled_chunk.cache_clear()
    torch._dynamo.reset()  # compile afresh, under the broken compiler
    try:
        with inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
            torch.manual_seed(0)
            fallen = importance_sample(model, x, k=30, k_chunk=10, compile=True, eager_fallback=True)
            with pytest.raises(ConfigError, match=r"eval\.compile=false"):  # asked for explicitly: an error
                importance_sample(model, x, k=30, k_chunk=10, compile=True)
    finally:
        _compiled_chunk.cache_clear()
        torch._dynamo.reset()
    warning = [line for line in capfd.readouterr().err.splitlines() if "torch.compile failed" in line]
    assert len(warning) == 1 and "running eagerly (eval.compile=auto)" in warning[0]
    for name in ("value", "reconstruction", "kl", "log_weights"):
        assert torch.equal(getattr(fallen, name), getattr(eager, name)), name


def test_eval_compile_accepts_bool_or_auto():
    from elbolab.config import apply_overrides, load_preset

    config = load_preset("vae-mnist")
    assert config.eval.compile == "auto"
    assert apply_overrides(config, ["eval.compile=true"]).eval.compile is True
    assert apply_overrides(config, ["eval.compile=auto"]).eval.compile == "auto"
    with pytest.raises(ConfigError, match=r'eval\.compile must be bool or "auto", got \'sometimes\''):
        apply_overrides(config, ["eval.compile=sometimes"])
