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


def _task(*overrides):
    return make_task(tiny_config(*overrides), torch.device("cpu"))


def test_train_auto_compiles_long_single_process_cpu_runs_of_tasks_that_compile(monkeypatch):
    """train.compile = "auto": a run of AUTO_MIN_UPDATES updates or more, of a task whose loss is one graph."""
    import importlib

    from elbolab.compiled import AUTO_MIN_UPDATES, cpp_compiler
    from elbolab.train import Phase, compiles

    cpu, one = torch.device("cpu"), [Phase()]
    task = _task()  # vae-digits: 1,500 training images of batch 50 -> 30 updates per epoch
    assert task.config.train.compile == "auto"
    epochs_enough = -(-AUTO_MIN_UPDATES // task.num_batches())
    task.config.train.epochs = epochs_enough - 1
    assert not compiles(task, cpu, one)  # short runs (every test, the quickstart) stay eager
    task.config.train.epochs = epochs_enough
    assert compiles(task, cpu, one) == (cpp_compiler() is not None)
    assert not compiles(task, cpu, [Phase(passes=0)])  # counts the plan's passes
    assert not compiles(task, torch.device("cuda"), one)
    task.config.train.compile = False
    assert not compiles(task, cpu, one)
    task.config.train.compile, task.config.train.epochs = True, 1
    assert compiles(task, cpu, one)  # an explicit true compiles whatever the length
    task.config.train.compile, task.config.train.epochs = "auto", epochs_enough
    train_module = importlib.import_module("elbolab.train")  # the package exports a function of that name
    monkeypatch.setattr(train_module.distributed, "active", lambda: True)
    assert not compiles(task, cpu, one)  # DDP runs are not auto-compiled (not yet measured)
    monkeypatch.undo()
    monkeypatch.setattr(type(task), "auto_compile", False)
    assert not compiles(task, cpu, one)


@pytest.mark.parametrize("overrides", [
    ("bound.name='elbo'", "bound.corruption='salt_and_pepper'", "bound.corruption_level=0.1"),  # DVAE
    ("task='quadrants'", "model.name='cvae'", "model.hidden=[32]", "model.latent_dim=4"),  # CVAE
    ("task='quadrants'", "model.name='cvae'", "model.hidden=[32]", "model.latent_dim=4", "bound.name='gsnn'"),
    ("task='inpainting'", "model.name='vaeac'", "model.hidden=[32, 32]", "model.latent_dim=4",
     "bound.mask='rectangle_or_mcar'", "bound.mask_level=0.5"),  # VAEAC
])
def test_tasks_that_auto_compile_have_a_one_graph_loss(overrides):
    """Every task family that lets "auto" compile it (the images' subclasses inherit it) compiles without a break."""
    task = _task(*overrides)
    model = task.build_model()
    batch = next(iter(task.batches(torch.Generator().manual_seed(0))))
    explanation = torch._dynamo.explain(task.loss)(model, batch, 0)
    assert not task.auto_compile or explanation.graph_break_count == 0, explanation.break_reasons


def test_auto_decision_is_kept_in_the_checkpoint_and_resume_follows_it(tmp_path, monkeypatch):
    """The decision "auto" made at the start is the run's: a resume with more epochs does not revisit it."""
    import importlib

    import elbolab.compiled as compiled_module

    monkeypatch.setattr(compiled_module, "cpp_compiler", lambda: "c++")
    monkeypatch.setattr(importlib.import_module("elbolab.train"), "AUTO_MIN_UPDATES", 80)  # vae-digits: 30 updates/epoch
    train(tiny_config("train.epochs=2", "train.eval_subset=0"), tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run")["compiled"] is False  # 60 updates: eager
    train(tiny_config("train.epochs=3", "train.eval_subset=0"), tmp_path / "run", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "run")["compiled"] is False  # 90 now, but the run started eager
    train(tiny_config("train.epochs=3", "train.eval_subset=0"), tmp_path / "long", progress=False)
    assert load_checkpoint(tmp_path / "long")["compiled"] is True


def test_a_loss_dynamo_cannot_trace_is_a_config_error_not_a_traceback(tmp_path):
    """train.compile=true on the sparse recommendation task: dynamo fails inside (a plain IndexError in
    torch 2.13); the trainer says how to turn compile off, and the run's earlier checkpoint stays."""
    from test_recommendation import cf_config

    run = tmp_path / "cf"
    train(cf_config(tmp_path, "mult-dae-ml100k", "train.epochs=1"), run, progress=False)
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"^torch\.compile failed \(.*turn it off with --set train\.compile=false$"):
        train(cf_config(tmp_path, "mult-dae-ml100k", "train.epochs=1", "train.compile=true"), tmp_path / "cf2",
              progress=False)
    assert not (tmp_path / "cf2" / "checkpoint.pt").exists()
    assert (run / "checkpoint.pt").read_bytes() == before
