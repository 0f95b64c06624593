"""The ``elbolab`` command. Each subcommand parses its options, calls the
library function of the same name, and prints; user errors become one line
on stderr and exit code 1, a malformed command line one line and exit code 2."""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
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
    """Print an ElbolabError (or an OSError of the file system) as one line and exit 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ElbolabError as err:
            message = " ".join(str(err).split())
            typer.echo(f"elbolab: error: {_rank_prefix()}{message}", err=True)
            raise typer.Exit(1) from None
        except OSError as err:  # the file system refused: a path under a file, no permission, a full disk
            where = f": {err.filename}" if err.filename else ""
            typer.echo(f"elbolab: error: {_rank_prefix()}{err.strerror or err}{where}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("elbolab: interrupted; files already written are kept (a training run continues from its "
                       "last checkpoint with --resume)", err=True)
            raise typer.Exit(130) from None

    return wrapper


def _rank_prefix() -> str:
    """``rank R: `` inside a torchrun launch, so a user sees which rank failed."""
    from . import distributed

    return f"rank {os.environ.get('RANK', '?')}: " if distributed.launched() else ""


# click's errors of the command line (ClickException; its UsageError: an unknown option or command, a missing
# argument, a value of the wrong type), found through typer's BadParameter because typer >= 0.2x ships its own
# copy of click and older typer uses click itself
CLICK_ERROR, USAGE_ERROR = (next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)
                            for name in ("ClickException", "UsageError"))


def command_line_error(err: Exception) -> int:
    """Print an error of the command line as one line on stderr (a malformed one names the help to read); its exit code.

    A bare command group (``elbolab``, ``elbolab data``) is a UsageError too:
    its help is what the user gets (rich typer has printed it already).
    """
    if type(err).__name__ == "NoArgsIsHelpError":
        if err.format_message():
            err.show()
        return err.exit_code
    message = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    if isinstance(err, USAGE_ERROR):
        message = f"{message.rstrip('.')}; see '{ctx.command_path if ctx is not None else 'elbolab'} --help'"
    typer.echo(f"elbolab: error: {message}", err=True)
    return err.exit_code


def flag(default: bool | None, *names: str, **options: Any) -> Any:
    """A typer option that takes no value (``--resume``, ``--progress/--no-progress``); its help shows no ``<bool>``."""
    return typer.Option(default, *names, metavar="", **options)


def command_tree(app: typer.Typer) -> Any:
    """The click command of ``app``, each ``--help`` shown without typer 0.29's ``<bool>`` (it takes no value either)."""
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        command = pending.pop()
        help_option = command.get_help_option(command.context_class(command))
        if help_option is not None:
            help_option.metavar = ""
        pending += getattr(command, "commands", {}).values()
    return root


NPROC_HELP = "run as N data-parallel processes under torchrun (DDP: gloo on CPU, nccl on GPU)"


def run_distributed(nproc: int, what: str, kept: Callable[[], str] = lambda: "") -> bool:
    """With ``--nproc N > 1``, relaunch this very command as N torchrun ranks; True when it did (the caller returns).

    A failed rank ends the job (torchrun stops the others): one line names the
    rank and says what is kept (``kept()``, asked after the failure); exit code 1.
    """
    from . import distributed

    if nproc == 1 or distributed.launched():
        if nproc > 1 and nproc != distributed.world_size_from_env():
            raise ConfigError(f"--nproc {nproc} inside a torchrun launch of {distributed.world_size_from_env()} ranks; drop --nproc")
        return False
    failed = distributed.launch(nproc, _without_nproc(sys.argv[1:]))
    if failed:
        typer.echo(f"elbolab: error: distributed {what} failed: {failed}, and torchrun stopped the others{kept()}", err=True)
        raise typer.Exit(1)
    return True


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


# --------------------------------------------------------------------------- data


@data_app.command("fetch")
@user_errors
def data_fetch(
    name: str = typer.Argument(..., help="data set: " + ", ".join(datasets.FETCHERS)),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="cache directory (default $ELBOLAB_DATA or ~/.cache/elbolab)"),
    force: bool = flag(False, "--force", help="fetch again even if a verified copy is cached"),
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
    root = datasets.data_dir(data_dir, create=False)
    typer.echo(f"cache: {root}" + ("" if root.is_dir() else " (does not exist yet)"))
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
    resume: bool = flag(False, "--resume", help="continue the run in --out from its last checkpoint"),
    progress: bool = flag(True, "--progress/--no-progress", help="live progress bar"),
    nproc: int = typer.Option(1, "--nproc", help=NPROC_HELP + "; --batch-size stays the global batch"),
    precision: Optional[str] = typer.Option(None, "--precision", help="train.precision: fp32, or bf16 (CUDA only)"),
) -> None:
    """Train a model; checkpoints every epoch, --resume continues exactly."""
    from .runs import CHECKPOINT
    from .train import train as train_run

    def kept() -> str:
        return f"; the last checkpoint in {out} is intact (continue with --resume)" if (out / CHECKPOINT).exists() else ""

    if run_distributed(nproc, "training", kept):
        return
    fields = {"train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed, "train.device": device,
              "train.precision": precision}
    if resume:
        if preset or config_file or overrides or batch_size is not None or seed is not None:
            raise ConfigError("--resume continues the run's own config; only --epochs and --device may change")
        from .runs import read_config

        config = cfg.apply_overrides(read_config(out), [f"{k}={json.dumps(v)}" for k, v in fields.items() if v is not None])
    else:
        config = build_config(preset, config_file, overrides, **fields)
    run = train_run(config, out, resume=resume, progress=progress)
    from . import distributed

    if distributed.is_main():
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
    progress: bool = flag(True, "--progress/--no-progress"),
    nproc: int = typer.Option(1, "--nproc", help=NPROC_HELP + "; each rank scores a share of the test set"),
    compile: Optional[bool] = flag(
        None, "--compile/--no-compile", help="fuse the log-weights with torch.compile (needs gcc or clang); "
        "default: the run's eval.compile (auto: from 10M importance samples on, where a C++ compiler is found)"),
) -> None:
    """Dissect a run's bound on its test set; writes RUN/eval.json and prints the table."""
    from . import distributed
    from .evaluate import evaluate as evaluate_run
    from .evaluate import format_eval

    if run_distributed(nproc, "evaluation"):
        return
    k_list = _int_list(ks, "--ks") if ks else None
    result = evaluate_run(
        run, ks=k_list, k_chunk=k_chunk, batch_size=batch_size, n_images=n_images, seed=seed,
        device=device, which=which, progress=progress, compile=compile,
    )
    if distributed.is_main():
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
    progress: bool = flag(True, "--progress/--no-progress"),
) -> None:
    """The main job: fetch MNIST, train a VAE and an IWAE (k=5), evaluate both, print the table."""
    from .quickstart import quickstart as run_quickstart

    table = run_quickstart(out, epochs=epochs, n_test=n_test, device=device, seed=seed, progress=progress)
    typer.echo(table)


# --------------------------------------------------------------------------- report / sweep (issue 6)


@app.command()
@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="run directories"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="the HTML file to write (PNGs go beside it)"),
    title: Optional[str] = typer.Option(None, "--title", help="the page's heading"),
) -> None:
    """Write the ELBO analysis report of one or more runs: one self-contained HTML file plus its PNGs."""
    from .report import write_report

    path = write_report(runs, out, title=title)
    typer.echo(f"report: {path}  (figures: {path.parent / (path.stem + '_files')})")


@app.command()
@user_errors
def sweep(
    out: Path = typer.Option(..., "--out", "-o", help="parent directory of the sweep's runs (and its report.html)"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="a shipped preset (`elbolab presets`)"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="a TOML config instead of a preset"),
    grid: list[str] = typer.Option([], "--set", help="key=v1,v2,... : one run per value (repeatable: the product)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="train.epochs of every run"),
    seed: Optional[int] = typer.Option(None, "--seed", help="train.seed of every run"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto (training and evaluation)"),
    n_images: Optional[int] = typer.Option(None, "--n-images", help="evaluate on the first N test examples (0: all)"),
    ks: Optional[str] = typer.Option(None, "--ks", help="comma-separated k for L_k"),
    progress: bool = flag(True, "--progress/--no-progress"),
) -> None:
    """Train and evaluate a grid of runs (sequentially, each resumable), then write the report of all of them."""
    from .report import compare_rows, format_rows
    from .sweep import parse_grid
    from .sweep import sweep as run_sweep

    config = build_config(preset, config_file, [], **{"train.epochs": epochs, "train.seed": seed, "train.device": device})
    k_list = _int_list(ks, "--ks") if ks else None
    result = run_sweep(config, parse_grid(grid), out, n_images=n_images, ks=k_list, device=device, progress=progress)
    typer.echo(format_rows(compare_rows(result.runs), "text"))
    typer.echo(f"\nreport: {result.report}")


# --------------------------------------------------------------------------- conditional VAE (issue 4)


@app.command()
@user_errors
def sample(
    run: Path = typer.Argument(..., help="a quadrant-completion (task 'quadrants') or image VAEAC (task 'inpainting') run directory"),
    out: Path = typer.Option(Path("completions.png"), "--out", "-o", help="the PNG grid to write"),
    given: Optional[int] = typer.Option(None, "--given", help="given quadrants, 1..3 (must match the run; default: the run's)"),
    n: int = typer.Option(8, "--n", help="completions per test digit, each from a fresh z ~ p(z | c)"),
    rows: int = typer.Option(8, "--rows", help="test digits (one per row)"),
    seed: int = typer.Option(0, "--seed", help="seed of the prior samples"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    which: str = typer.Option("best", "--which", help="best or last"),
) -> None:
    """Draw completions of test digits from the prior network; given quadrants are drawn in blue."""
    from .completions import sample_completions

    path = sample_completions(run, out, given=given, n=n, rows=rows, seed=seed, device=device, which=which)
    typer.echo(f"completions: {path}  ({rows} test digits x (truth + {n} completions))")


# --------------------------------------------------------------------------- impute (issue 5)


@app.command()
@user_errors
def impute(
    data: Path = typer.Argument(..., help="a CSV, TSV or parquet file; empty cells and NaN are missing"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="where to write the completed table (.csv/.tsv/.parquet)"),
    num_imputations: int = typer.Option(10, "--num-imputations", help="draws per row; > 1 also writes OUTPUT's .imputations long form"),
    categorical: Optional[str] = typer.Option(None, "--categorical", help="comma-separated columns to treat as categorical (non-numeric ones always are)"),
    epochs: int = typer.Option(50, "--epochs", help="training epochs (the best validation-IWAE epoch is kept)"),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="also save the fitted imputer to this new directory"),
    model: Optional[Path] = typer.Option(None, "--model", help="reuse an imputer saved with --save-model instead of fitting"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
    progress: bool = flag(True, "--progress/--no-progress", help="live progress bar while training"),
) -> None:
    """Fill in the missing cells of a table with VAEAC (one model for any pattern of missing values)."""
    import warnings

    from .imputer import ImputationWarning, impute_file

    if output is None:
        output = data.with_name(f"{data.stem}.imputed{data.suffix}")
    columns = [c.strip() for c in categorical.split(",") if c.strip()] if categorical else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = impute_file(
            data, output, num_imputations=num_imputations, categorical=columns, epochs=epochs,
            save_model=save_model, model=model, seed=seed, device=device, progress=progress,
        )
    for warning in caught:
        if issubclass(warning.category, ImputationWarning):
            typer.echo(f"elbolab: warning: {' '.join(str(warning.message).split())}", err=True)
    for note in written.get("notes", []):
        typer.echo(f"elbolab: {note}", err=True)
    typer.echo(f"{written['input']}: {written['rows']} rows, {written['missing_cells']} missing cells imputed")
    for path in written["outputs"]:
        typer.echo(f"wrote {path}")
    if "model" in written:
        typer.echo(f"saved the imputer to {written['model']} (reuse: elbolab impute --model {written['model']} NEW.csv)")


# --------------------------------------------------------------------------- collaborative filtering (issue 3)


@app.command()
@user_errors
def recommend(
    run: Path = typer.Argument(..., help="a trained recommendation run directory"),
    items: str = typer.Option(..., "--items", help="comma-separated original item ids the user clicked"),
    n: int = typer.Option(10, "-n", "--n", help="how many items to recommend"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
) -> None:
    """Top items for a (new) user with this history, by fold-in; prints original ids and titles."""
    from .recommendation import recommend as recommend_items

    result = recommend_items(run, [part for part in items.split(",") if part.strip()], n, device)
    for item in result["unknown"]:
        typer.echo(f"elbolab: item {item!r} is not in the run's item set; skipped", err=True)
    typer.echo(f"history: {', '.join(result['history'])}")
    typer.echo(f"{'rank':>4}  {'item':>10}  {'score':>8}  title")
    for rank, (item, title, score) in enumerate(result["recommendations"], 1):
        typer.echo(f"{rank:>4}  {item:>10}  {score:>8.3f}  {title}")


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
    from . import distributed
    from .memory import reuse_freed_memory

    reuse_freed_memory()  # large CPU tensors without page faults (memory.py)
    try:
        status: int | str | None = command_tree(app)(standalone_mode=False)  # a typer.Exit's code; None when a command returns
    except CLICK_ERROR as err:
        status = command_line_error(err)
    except SystemExit as stop:
        if not distributed.joined():
            raise
        status = stop.code
    except BaseException:
        if not distributed.joined():
            raise
        traceback.print_exc()  # os._exit below would end the rank before Python prints it
        status = 1
    distributed.leave(status)  # a rank of a torchrun launch ends here
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
