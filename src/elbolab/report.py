"""Reading runs side by side: the headline numbers of several run directories
as one table (terminal, CSV, JSON or Markdown)."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .runs import read_config, read_eval, read_metrics

FORMATS = ("text", "csv", "json", "markdown")


def compare_rows(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One dict of headline numbers per run; a run without eval.json gets a note instead of numbers."""
    rows = []
    for run_dir in run_dirs:
        config = read_config(run_dir)
        metrics = read_metrics(run_dir)
        result = read_eval(run_dir)
        row: dict[str, Any] = {
            "run": str(run_dir),
            "model": config.model.name,
            "bound": config.bound.name + (f" k={config.bound.k}" if config.bound.name == "iwae" else ""),
            "beta": config.bound.beta,
            "epochs": metrics[-1]["epoch"] if metrics else 0,
        }
        if result is None:
            row["note"] = "not evaluated: run `elbolab evaluate` on it"
        else:
            row.update(
                {
                    "n_test": result["n_examples"],
                    "ELBO": result["elbo"]["mean"],
                    "reconstruction": result["reconstruction"]["mean"],
                    "KL": result["kl"]["mean"],
                    **{f"L_{k}": stat["mean"] for k, stat in result["bound_curve"].items()},
                    "log_p(x)": result["log_likelihood"]["mean"],
                    "log_p(x)_se": result["log_likelihood"]["se"],
                    "gap": result["gap"]["mean"],
                    "active_units": result["active_units"]["count"],
                }
            )
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]], fmt: str = "text") -> str:
    """``rows`` as text (aligned columns, one run per column), csv, json or markdown."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(rows, indent=2)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    cells = [[_cell(row.get(key, "")) for row in rows] for key in keys]
    if fmt == "markdown":
        header = "| | " + " | ".join(cells[keys.index("run")]) + " |"
        lines = [header, "|---" * (len(rows) + 1) + "|"]
        lines += ["| " + key + " | " + " | ".join(values) + " |" for key, values in zip(keys, cells) if key != "run"]
        return "\n".join(lines)
    width = max(len(k) for k in keys)
    col = [max(len(v) for v in column) for column in zip(*cells)] if rows else []
    return "\n".join(
        f"{key:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, col)) for key, values in zip(keys, cells)
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
