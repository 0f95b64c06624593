"""The ``elbolab`` command. Each subcommand parses its options, calls the
library function of the same name, and prints; user errors become one line
on stderr and exit code 1."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from . import config as cfg
from . import data as datasets
from .errors import ConfigError, ElbolabError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train, evaluate and dissect the evidence lower bounds of the VAE family.",
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch, verify and list cached data sets.")
app.add_typer(data_app, name="data")


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print an ElbolabError as one line and exit 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ElbolabError as err:
            message = " ".join(str(err).split())
            typer.echo(f"elbolab: error: {message}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("elbolab: interrupted; the last checkpoint is kept (continue with --resume)", err=True)
            raise typer.Exit(130) from None

    return wrapper


# --------------------------------------------------------------------------- data


@data_app.command("fetch")
@user_errors
def data_fetch(
    name: str = typer.Argument(..., help="data set: " + ", ".join(datasets.DATASETS)),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="cache directory (default $ELBOLAB_DATA or ~/.cache/elbolab)"),
    force: bool = typer.Option(False, "--force", help="fetch again even if a verified copy is cached"),
) -> None:
    """Fetch a data set from its verified source into the cache (sha256-checked)."""
    path = datasets.fetch(name, data_dir, force=force)
    typer.echo(f"{name}: {path}")


@data_app.command("list")
@user_errors
def data_list(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="cache directory"),
) -> None:
    """Show what is cached, with sizes and whether each file still matches its checksum."""
    entries = datasets.list_cached(data_dir)
    typer.echo(f"cache: {datasets.data_dir(data_dir)}")
    if not entries:
        typer.echo("  (empty; try `elbolab data fetch mnist`)")
    for entry in entries:
        state = "verified" if entry["verified"] else "NOT verified (will be fetched again)"
        typer.echo(f"  {entry['name']:<28} {entry['size'] / 1e6:>9.1f} MB  {state}")


# --------------------------------------------------------------------------- configs


@app.command()
@user_errors
def presets(show: Optional[str] = typer.Option(None, "--show", help="print one preset's full config")) -> None:
    """List the shipped presets (or show one in full)."""
    if show:
        typer.echo(cfg.dump_toml(cfg.load_preset(show)))
        return
    for name in cfg.preset_names():
        description = cfg.load_preset(name).description
        typer.echo(f"{name:<18} {description}")


def build_config(
    preset: Optional[str], config_file: Optional[Path], overrides: list[str], **fields: Any
) -> cfg.Config:
    """A Config from a preset or file, then ``--set`` overrides, then the named options that were given."""
    if preset and config_file:
        raise ConfigError("give --preset or --config, not both")
    if config_file:
        config = cfg.load_toml(config_file)
    elif preset:
        config = cfg.load_preset(preset)
    else:
        raise ConfigError(f"give --preset NAME (one of {', '.join(cfg.preset_names())}) or --config FILE")
    named = [f"{key}={json.dumps(value)}" for key, value in fields.items() if value is not None]
    return cfg.apply_overrides(config, [*overrides, *named])


# --------------------------------------------------------------------------- train / evaluate / compare


@app.command()
@user_errors
def train(
    out: Path = typer.Option(..., "--out", "-o", help="run directory to write (config, metrics, checkpoint)"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="a shipped preset (`elbolab presets`)"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="a TOML config instead of a preset"),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: key=value (repeatable)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="train.epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="train.batch_size"),
    seed: Optional[int] = typer.Option(None, "--seed", help="train.seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bar"),
) -> None:
    """Train a model; checkpoints every epoch, --resume continues exactly."""
    from .train import train as train_run

    fields = {"train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed, "train.device": device}
    if resume:
        if preset or config_file or overrides or batch_size is not None or seed is not None:
            raise ConfigError("--resume continues the run's own config; only --epochs and --device may change")
        from .runs import read_config

        config = cfg.apply_overrides(read_config(out), [f"{k}={json.dumps(v)}" for k, v in fields.items() if v is not None])
    else:
        config = build_config(preset, config_file, overrides, **fields)
    run = train_run(config, out, resume=resume, progress=progress)
    typer.echo(f"trained: {run}  (next: elbolab evaluate {run})")


@app.command()
@user_errors
def evaluate(
    run: Path = typer.Argument(..., help="a run directory"),
    ks: Optional[str] = typer.Option(None, "--ks", help="comma-separated k for L_k (largest = log-likelihood estimate)"),
    k_chunk: Optional[int] = typer.Option(None, "--k-chunk", help="importance samples per pass (memory bound)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="test examples per pass (memory bound)"),
    n_images: Optional[int] = typer.Option(None, "--n-images", help="evaluate the first N test examples (0: all)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the importance samples"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    which: str = typer.Option("best", "--which", help="best (the task's selected epoch) or last"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Dissect a run's bound on its test set; writes RUN/eval.json and prints the table."""
    from .evaluate import evaluate as evaluate_run
    from .evaluate import format_eval

    k_list = _int_list(ks, "--ks") if ks else None
    result = evaluate_run(
        run, ks=k_list, k_chunk=k_chunk, batch_size=batch_size, n_images=n_images, seed=seed,
        device=device, which=which, progress=progress,
    )
    typer.echo(format_eval(result))


@app.command()
@user_errors
def compare(
    runs: list[Path] = typer.Argument(..., help="run directories"),
    fmt: str = typer.Option("text", "--format", "-f", help="text, csv, json or markdown"),
) -> None:
    """The headline numbers of several runs side by side."""
    from .report import compare_rows, format_rows

    typer.echo(format_rows(compare_rows(runs), fmt))


@app.command()
@user_errors
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="parent directory of the two runs"),
    epochs: int = typer.Option(10, "--epochs", help="epochs per model"),
    n_test: int = typer.Option(1000, "--n-test", help="test images for evaluation (10000: all)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The main job: fetch MNIST, train a VAE and an IWAE (k=5), evaluate both, print the table."""
    from .quickstart import quickstart as run_quickstart

    table = run_quickstart(out, epochs=epochs, n_test=n_test, device=device, seed=seed, progress=progress)
    typer.echo(table)


# --------------------------------------------------------------------------- analyze: inference gaps (issue 8)

analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of a trained run beyond its bound.")
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("gaps")
@user_errors
def analyze_gaps(
    run: Path = typer.Argument(..., help="a run directory"),
    n_points: int = typer.Option(300, "--n-points", help="the first N test points"),
    steps: int = typer.Option(20000, "--steps", help="most Adam steps of the local optimization"),
    lr: float = typer.Option(1e-3, "--lr", help="learning rate of the local optimization"),
    tol: float = typer.Option(0.01, "--tol", help="stop when 5 windows of 100 steps improve the mean ELBO by less (nats)"),
    k: int = typer.Option(5000, "--k", help="importance samples for log p(x)"),
    elbo_samples: int = typer.Option(1000, "--elbo-samples", help="samples per point for each ELBO estimate"),
    seed: int = typer.Option(0, "--seed", help="seed of every sample drawn"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
) -> None:
    """Approximation and amortization gaps (Cremer et al. 2018); writes RUN/eval.json's inference_gaps."""
    from .gaps import LocalOptimization, format_gaps
    from .gaps import analyze_gaps as run_gaps

    result = run_gaps(
        run, n_points=n_points, optimization=LocalOptimization(lr=lr, max_steps=steps, tol=tol), k=k,
        elbo_samples=elbo_samples, seed=seed, device=device,
    )
    typer.echo(format_gaps(result, title=str(run)))


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated integers, got {text!r}") from None


def main() -> None:
    """Entry point of the ``elbolab`` script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
