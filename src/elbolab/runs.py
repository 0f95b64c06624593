"""A run is a directory (DESIGN.md sec. 3): config.toml, metrics.jsonl,
checkpoint.pt, eval.json, report.html. This module reads and writes them;
every write is atomic (temp file + rename), so a killed process never leaves
a half-written file where a good one was.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import Config, dump_toml, load_toml
from .errors import RunError
from .models import LatentVariableModel, build_model

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # weights of the epoch with the best selection metric, for tasks that name one
EVAL = "eval.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def require_run(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, checked to be a run directory (it has a config)."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file():
        raise RunError(f"{run} is not a run directory (no {CONFIG}); train one with `elbolab train --out {run}`")
    return run


def read_config(run_dir: str | Path) -> Config:
    """The config a run was trained with."""
    return load_toml(require_run(run_dir) / CONFIG)


def make_run_dir(run: Path) -> None:
    """Create the run directory ``run`` (and its parents); a path that is, or lies under, a file is a RunError."""
    try:
        Path(run).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunError(f"{run} is a file or lies under one; give --out a directory") from None
    except OSError as err:
        raise RunError(f"cannot create the run directory {run}: {err.strerror}") from None


def write_config(run_dir: Path, config: Config) -> None:
    """Write the run's config.toml."""
    write_text(Path(run_dir) / CONFIG, dump_toml(config))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Atomically save a checkpoint (weights, optimizer, step, RNG states) as torch state dicts."""
    atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: torch.save(state, tmp))


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The run's checkpoint, loaded with ``weights_only=True`` (tensors and plain containers only)."""
    path = require_run(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"{Path(run_dir)} has no {CHECKPOINT} yet; train it first (`elbolab train ... --out {run_dir}`)")
    return _read_weights(path, map_location)


def _read_weights(path: Path, device: str | torch.device) -> dict[str, Any]:
    """A checkpoint or best.pt (a dict with at least model_spec and model); a damaged or foreign file is a RunError."""
    device = torch.device(device)
    try:  # torch.load restores storages on "cpu", not "cpu:0"
        state = torch.load(path, map_location="cpu" if device.type == "cpu" else device, weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise RunError(f"{path} cannot be read ({type(err).__name__}); it is damaged: retrain or restore it") from None
    if not (isinstance(state, dict) and {"model_spec", "model"} <= state.keys()):
        raise RunError(f"{path} is not an elbolab checkpoint (it has no model_spec and model); retrain or restore it")
    return state


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of metrics.jsonl; a line that is not a JSON object with an epoch (a torn
    last line from a kill, or a damaged one) is skipped, and every other record is kept."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    return records


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record to metrics.jsonl."""
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep only the records of epochs <= ``last_epoch`` (those the checkpoint includes)."""
    kept = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def read_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's eval.json, or None if it has not been evaluated."""
    path = Path(run_dir) / EVAL
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise RunError(f"{path} is damaged (not a JSON object); run `elbolab evaluate {run_dir}` again to rewrite it")
    return data


def load(run_dir: str | Path, *, which: str = "best", device: str | torch.device = "cpu") -> LatentVariableModel:
    """The trained model of a run directory, in eval mode, ready for posterior / prior / likelihood / log_weights.

    ``which="best"`` takes the epoch the task selected (best.pt) when the run
    has one and the last epoch otherwise; ``which="last"`` always the last.
    """
    if which not in ("best", "last"):
        raise RunError(f"which must be 'best' or 'last', got {which!r}")
    run = require_run(run_dir)
    if which == "best" and (run / BEST).is_file():
        checkpoint = _read_weights(run / BEST, device)
    else:
        checkpoint = load_checkpoint(run, map_location=device)
    spec = checkpoint["model_spec"]
    model = build_model(spec["name"], **spec["kwargs"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()
