"""A grid of runs from one preset: ``--set beta=0.25,0.5,1,2,4,8`` trains one
normal run directory per value (sequentially, each resumable), evaluates each,
and ends with the report of all of them. For a beta sweep its rate-distortion
plane draws the curve of Alemi et al. (2018, Fig. 1).
"""
from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config, apply_overrides, resolve_key
from .errors import ConfigError
from .runs import CHECKPOINT, EVAL, read_metrics
from .train import train


@dataclass(frozen=True)
class SweepResult:
    """The run directories of a sweep, in grid order, and its report."""

    runs: list[Path]
    report: Path | None


def split_values(text: str) -> list[str]:
    """``0.25,0.5,[1, 2]`` -> ['0.25', '0.5', '[1, 2]']: commas inside brackets or quotes do not split."""
    parts, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    parts.append(current.strip())
    if any(not p for p in parts):
        raise ConfigError(f"--set {text!r} has an empty value; write key=v1,v2,...")
    return parts


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["beta=0.25,0.5", "epochs=5"]`` -> {"beta": ["0.25", "0.5"], "epochs": ["5"]}; keys checked against the config."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value or key=v1,v2,..., got {item!r}")
        key, text = (part.strip() for part in item.split("=", 1))
        resolve_key(key)  # an unknown or ambiguous key fails here, before anything trains
        if key in grid:
            raise ConfigError(f"--set {key} given twice; list its values once: {key}=v1,v2,...")
        grid[key] = split_values(text)
    return grid


def run_name(point: dict[str, str], varying: Sequence[str]) -> str:
    """The directory name of one grid point: ``beta-0.25`` (only the keys that vary; safe characters only)."""
    keys = list(varying) or list(point)
    name = "_".join(f"{key}-{re.sub(r'[^A-Za-z0-9.+-]+', '_', point[key]).strip('_')}" for key in keys)
    return name or "run"


def ensure_trained(config: Config, run: Path, *, progress: bool = True) -> Path:
    """Train ``config`` into ``run``, resume it when it stopped short of its epochs, or leave a finished run alone."""
    done = read_metrics(run)
    if not (run / CHECKPOINT).exists():
        say(progress, f"== training {run} for {config.train.epochs} epochs")
        return train(config, run, progress=progress)
    if not done or done[-1]["epoch"] < config.train.epochs:
        say(progress, f"== resuming {run} (epoch {done[-1]['epoch'] if done else 0} of {config.train.epochs})")
        return train(config, run, resume=True, progress=progress)
    return run


def evaluation_is_current(run: Path) -> bool:
    """True when ``run`` has an eval.json written after its last checkpoint (so its numbers are of these weights)."""
    eval_file = Path(run) / EVAL
    return eval_file.is_file() and eval_file.stat().st_mtime >= (Path(run) / CHECKPOINT).stat().st_mtime


def sweep(
    config: Config,
    grid: dict[str, list[str]],
    out: str | Path,
    *,
    n_images: int | None = None,
    ks: Sequence[int] | None = None,
    device: str = "cpu",
    report: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Train and evaluate every point of ``grid`` (the Cartesian product of its values) under ``out``, then report them all.

    Each point is an ordinary run directory ``out/<key>-<value>``; running the
    same sweep again resumes unfinished runs and re-evaluates only runs whose
    checkpoint is newer than their eval.json, so an interrupted sweep costs
    only what was lost.
    """
    from .evaluate import evaluate, format_eval
    from .report import write_report

    if not grid:
        raise ConfigError("a sweep needs at least one --set key=v1,v2,...")
    out = Path(out)
    keys = list(grid)
    varying = [k for k in keys if len(grid[k]) > 1]
    runs = []
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    configs = [apply_overrides(config, [f"{k}={v}" for k, v in point.items()]) for point in points]  # all checked before any trains
    names = [run_name(point, varying) for point in points]
    if len(set(names)) != len(names):
        raise ConfigError(f"two grid points map to the same directory name ({names}); give distinct values")
    for i, (run_config, name) in enumerate(zip(configs, names)):
        run = out / name
        say(progress, f"== sweep point {i + 1}/{len(points)}: {name}")
        ensure_trained(run_config, run, progress=progress)
        if not evaluation_is_current(run):
            result = evaluate(run, ks=ks, n_images=n_images, device=device, progress=progress)
            say(progress, format_eval(result))
        runs.append(run)
    path = write_report(runs, out / "report.html", title=f"sweep over {', '.join(varying or keys)}: {out}") if report else None
    return SweepResult(runs=runs, report=path)


def say(enabled: bool, message: str) -> None:
    """Print a progress line to stderr when ``enabled``."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
