"""Reading runs side by side: the headline numbers of several run directories
as one table (terminal, CSV, JSON or Markdown), and the ELBO analysis report
(one self-contained HTML page of plots and tables, ``write_report``)."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .config import Config
from .errors import ConfigError
from .runs import BEST, CHECKPOINT, CONFIG, atomic_write, read_config, read_eval, read_metrics, require_run, write_text

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


# =========================================================================== the HTML report
#
# ``write_report`` builds one self-contained HTML file (every image a base64
# data URI: no network, opens offline) from run directories, and writes each
# figure as a PNG beside it. The page is the list ``SECTIONS``: each entry is a
# function that takes the runs and the page and returns its HTML block, or a
# note saying why it does not apply. A family adds its own section by
# appending an entry (in a block of its own).


@dataclass
class RunView:
    """Everything the report reads from one run directory (read once, shared by every section)."""

    path: Path
    label: str
    config: Config
    config_text: str
    metrics: list[dict[str, Any]]
    eval: dict[str, Any] | None


def read_runs(run_dirs: Sequence[str | Path]) -> list[RunView]:
    """The runs of a report, labelled by directory name (by the full path where two names collide)."""
    if not run_dirs:
        raise ConfigError("a report needs at least one run directory")
    paths = [require_run(r) for r in run_dirs]
    names = [p.name or str(p) for p in paths]
    labels = [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names)]
    return [
        RunView(path=p, label=label, config=read_config(p), config_text=(p / CONFIG).read_text(),
                metrics=read_metrics(p), eval=read_eval(p))
        for p, label in zip(paths, labels)
    ]


class Page:
    """Where a section puts its figures: each becomes a PNG in ``png_dir`` and an <img> with the same bytes inline.

    The PNGs are held until :meth:`save`, which the report calls once the whole page is built: a report
    that fails half way leaves the previous report's figures as they were.
    """

    def __init__(self, png_dir: Path) -> None:
        self.png_dir = Path(png_dir)
        self._pending: dict[Path, bytes] = {}

    def save(self) -> None:
        """Write every figure of the page as its PNG file."""
        for path, data in self._pending.items():
            atomic_write(path, lambda tmp, data=data: tmp.write_bytes(data))
        self._pending.clear()

    def figure(self, fig, name: str, caption: str = "") -> str:
        """Save ``fig`` as ``png_dir/name.png`` and return its <figure> block (image embedded as a data URI)."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return self.png(buffer.getvalue(), name, caption)

    def png(self, data: bytes, name: str, caption: str = "") -> str:
        """Save PNG bytes as ``png_dir/name.png`` and return their <figure> block (for images made without matplotlib)."""
        path = self.png_dir / f"{_slug(name)}.png"
        self._pending[path] = data
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        alt = html.escape(caption or name, quote=True)
        text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="{uri}" alt="{alt}" data-png="{html.escape(path.name)}">{text}</figure>'


def note(text: str) -> str:
    """A clear note in place of something a run does not have."""
    return f'<p class="note">{html.escape(text)}</p>'


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "figure"


def _num(value: Any) -> str:
    """A number as the report prints it everywhere (tests look for this exact text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"


def _stat(value: Any) -> str:
    """``{mean, se}`` as 'mean ± se', a number as itself."""
    if isinstance(value, Mapping) and "mean" in value:
        se = value.get("se")
        return _num(value["mean"]) + (f" ± {_num(se)}" if isinstance(se, (int, float)) else "")
    return _num(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _missing_eval(runs: Sequence[RunView]) -> str:
    missing = [r for r in runs if r.eval is None]
    if not missing:
        return ""
    names = ", ".join(r.label for r in missing)
    return note(f"not evaluated yet (no eval.json): {names}; run `elbolab evaluate RUN` on each to fill this section in")


def _evaluated(runs: Sequence[RunView]) -> list[tuple[int, RunView]]:
    return [(i, r) for i, r in enumerate(runs) if r.eval is not None]


# --------------------------------------------------------------------------- sections


def summary_section(runs: Sequence[RunView], page: Page) -> str:
    """The headline numbers of every run (the rows of ``elbolab compare``), nats per test example."""
    rows = compare_rows([r.path for r in runs])
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "run"]
    body = [[html.escape(key)] + [_num(row.get(key, "")) for row in rows] for key in keys]
    header = [""] + [html.escape(r.label) for r in runs]
    described = "".join(
        f"<li><b>{html.escape(r.label)}</b> <code>{html.escape(str(r.path))}</code>: {html.escape(r.config.description or r.config.preset)}</li>"
        for r in runs
    )
    return f"<ul>{described}</ul>" + html_table(header, body, "numbers")


def training_section(runs: Sequence[RunView], page: Page) -> str:
    """The bound, its two terms and beta over epochs, train and test (metrics.jsonl)."""
    from .plots import draw_training_curves, training_curves_data

    have = [(r.label, training_curves_data(r.metrics)) for r in runs if r.metrics]
    missing = [r.label for r in runs if not r.metrics]
    out = note(f"no metrics.jsonl records yet: {', '.join(missing)}") if missing else ""
    if have:
        caption = ("solid: the training objective averaged over each epoch's batches (the beta-ELBO, or L_k for IWAE); "
                   "dashed: the test ELBO (k = 1) after each epoch")
        out = page.figure(draw_training_curves(have), "training-curves", caption) + out
    return out


def metrics_section(runs: Sequence[RunView], page: Page) -> str:
    """Every other valid_* / test_* key of metrics.jsonl (ranking metrics, imputation errors, ...) over epochs."""
    from .plots import curve_keys, draw_metric_curves, metric_curves_data, training_curves_data

    have = []
    for r in runs:
        data = metric_curves_data(r.metrics, skip=curve_keys(training_curves_data(r.metrics)))
        if data:
            have.append((r.label, data))
    if not have:
        return note("no valid_* / test_* metrics besides the bound terms were logged per epoch")
    return page.figure(draw_metric_curves(have), "metric-curves", "per-epoch validation / test metrics from metrics.jsonl")


def rate_distortion_section(runs: Sequence[RunView], page: Page) -> str:
    """The rate-distortion plane (Alemi et al. 2018): one point per evaluated run."""
    from .plots import draw_rate_distortion, rate_distortion_data, run_color

    evaluated = _evaluated(runs)
    if not evaluated:
        return _missing_eval(runs)
    points = rate_distortion_data([(r.label, r.eval) for _, r in evaluated])
    fig = draw_rate_distortion(points, [run_color(i) for i, _ in evaluated])
    caption = ("rate = mean KL(q(z|x) || p(z)), distortion = -E_q[log p(x|z)] on the test set; "
               "a beta sweep traces the curve; lower-left is a better ELBO")
    return page.figure(fig, "rate-distortion", caption) + _missing_eval(runs)


def tightness_section(runs: Sequence[RunView], page: Page) -> str:
    """L_k against k with standard errors, the log-likelihood estimate, and the gap split by k."""
    from .plots import draw_tightness, tightness_data

    evaluated = _evaluated(runs)
    if not evaluated:
        return _missing_eval(runs)
    data = [(r.label, tightness_data(r.eval)) for _, r in evaluated]
    rows = []
    for label, d in data:
        steps = "; ".join(f"{html.escape(s)}: {_num(v)}" for s, v in d["recovered"])
        rows.append([html.escape(label), _num(d["elbo"]), _num(d["log_likelihood"]["mean"]), _num(d["gap"]), steps])
    table = html_table(["run", "ELBO", "log p(x) estimate", "gap", "recovered by each step in k (nats)"], rows, "numbers")
    caption = ("error bars: one standard error over test examples; the first step, ELBO → L_1, is Monte-Carlo noise "
               "(L_1 samples the KL term the ELBO takes in closed form)")
    return page.figure(draw_tightness(data), "tightness", caption) + table + _missing_eval(runs)


def inference_gaps_section(runs: Sequence[RunView], page: Page) -> str:
    """Approximation and amortization gaps (Cremer et al. 2018), when eval.json has ``inference_gaps``."""
    from .plots import draw_inference_gaps, inference_gaps_data

    data = [(r.label, inference_gaps_data(r.eval) if r.eval is not None else None) for r in runs]
    have = [(label, d) for label, d in data if d is not None]
    lacking = [label for label, d in data if d is None]
    out = note(f"no inference-gap analysis in eval.json for: {', '.join(lacking)}") if lacking else ""
    if have:
        rows = [[html.escape(label), _num(d["log_likelihood"]), _num(d["elbo_optimized"]), _num(d["elbo_amortized"]),
                 _num(d["approximation_gap"]), _num(d["amortization_gap"]), _num(d["n_examples"])] for label, d in have]
        table = html_table(["run", "log p(x)", "L[q*]", "L[q_φ]", "approximation gap", "amortization gap", "examples"], rows, "numbers")
        out = page.figure(draw_inference_gaps(have), "inference-gaps", "nats per test example") + table + out
    return out


def latent_usage_section(runs: Sequence[RunView], page: Page) -> str:
    """KL per latent dimension and the active-unit statistic, sorted, with the threshold drawn."""
    from .plots import draw_latent_usage, latent_usage_data

    evaluated = _evaluated(runs)
    if not evaluated:
        return _missing_eval(runs)
    data = [(r.label, latent_usage_data(r.eval)) for _, r in evaluated]
    no_kl = [label for label, d in data if d["kl_sorted"] is None]
    out = page.figure(draw_latent_usage(data), "latent-usage", "a unit is active when A_u exceeds the threshold (Burda et al. 2016, sec. 5.2)")
    if no_kl:
        out += note(f"no per-dimension KL (the posterior or prior does not factorise): {', '.join(no_kl)}")
    return out + _missing_eval(runs)


# Tasks whose examples are flat images (a family with image data adds its task name here).
IMAGE_TASKS: set[str] = {"images"}


def images_section(runs: Sequence[RunView], page: Page) -> str:
    """For image models: reconstructions, prior samples, latent traversals and the 2-D view of posterior means."""
    from .plots import draw_latent_2d, draw_reconstructions, draw_samples, draw_traversals, image_panels

    image_runs = [r for r in runs if r.config.task in IMAGE_TASKS]
    if not image_runs:
        return note("no image runs among these runs")
    blocks = []
    for r in image_runs:
        title = f"<h3>{html.escape(r.label)}</h3>"
        if not ((r.path / CHECKPOINT).is_file() or (r.path / BEST).is_file()):
            blocks.append(title + note("no checkpoint yet: train the run to see its images"))
            continue
        panels = image_panels(r.path)
        if panels is None:
            blocks.append(title + note("not shown: the data is not square images (e.g. 784 or 64 pixels) or the model is conditional"))
            continue
        kl = r.eval.get("kl_per_dim") if r.eval else None
        name = _slug(r.label)
        blocks.append(
            title
            + '<div class="row">'
            + page.figure(draw_reconstructions(panels), f"{name}-reconstructions", "test inputs and their reconstructions")
            + page.figure(draw_samples(panels), f"{name}-samples", "samples from the prior")
            + '</div><div class="row">'
            + page.figure(draw_traversals(panels, kl), f"{name}-traversals", "latent traversals (rows labelled with their KL in nats)")
            + page.figure(draw_latent_2d(panels), f"{name}-posterior-2d", f"posterior means, {panels.projection}")
            + "</div>"
        )
    return "".join(blocks)


def task_metrics_section(runs: Sequence[RunView], page: Page) -> str:
    """Every entry of eval.json's task_metrics (ranking, imputation, conditional likelihood, ...), runs side by side."""
    evaluated = _evaluated(runs)
    names = list(dict.fromkeys(name for _, r in evaluated for name in r.eval.get("task_metrics", {})))
    if not names:
        return note("no task-specific test metrics in eval.json (unconditional images: the bound's dissection is the whole story)") + _missing_eval(runs)
    rows = [[html.escape(name)] + [_stat(r.eval.get("task_metrics", {}).get(name, "")) for _, r in evaluated] for name in names]
    return html_table(["metric"] + [html.escape(r.label) for _, r in evaluated], rows, "numbers") + _missing_eval(runs)


def flatten_numbers(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf of a JSON value as (dotted path, value); a list of numbers stays one entry."""
    if isinstance(data, Mapping):
        out = []
        for key, value in data.items():
            out += flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, data)]


def eval_table_section(runs: Sequence[RunView], page: Page) -> str:
    """A table of every number in eval.json (nats where the quantity is a bound or term)."""
    evaluated = _evaluated(runs)
    if not evaluated:
        return _missing_eval(runs)
    flat = [dict(flatten_numbers(r.eval)) for _, r in evaluated]
    keys = list(dict.fromkeys(k for f in flat for k in f))

    def cell(value: Any) -> str:
        if isinstance(value, list):
            return '<span class="list">' + " ".join(_num(v) for v in value) + "</span>"
        return _num(value) if value != "" else ""

    rows = [[html.escape(k)] + [cell(f.get(k, "")) for f in flat] for k in keys]
    return html_table(["eval.json"] + [html.escape(r.label) for _, r in evaluated], rows, "numbers all") + _missing_eval(runs)


def config_section(runs: Sequence[RunView], page: Page) -> str:
    """The config.toml that made each run."""
    return '<div class="row">' + "".join(
        f'<div><h3>{html.escape(r.label)}</h3><pre>{html.escape(r.config_text)}</pre></div>' for r in runs
    ) + "</div>"


class Section(NamedTuple):
    """One block of the report: an anchor name, a heading, and the function that renders it."""

    key: str
    title: str
    render: Callable[[Sequence[RunView], Page], str]


# The page, in order. A family adds its section in a block of its own below, e.g.
#     def ranking_section(runs: Sequence[RunView], page: Page) -> str:
#         ...  # return page.figure(fig, "ranking", caption) + a table, or note("why it does not apply")
#     SECTIONS.insert(section_index("task-metrics"), Section("ranking", "Ranking", ranking_section))
SECTIONS: list[Section] = [
    Section("summary", "Runs and headline numbers (nats per test example)", summary_section),
    Section("training", "Training curves", training_section),
    Section("metrics", "Validation and test metrics over epochs", metrics_section),
    Section("rate-distortion", "Rate-distortion plane", rate_distortion_section),
    Section("tightness", "Tightness: L_k against k", tightness_section),
    Section("inference-gaps", "Inference gaps", inference_gaps_section),
    Section("latent-usage", "Latent usage", latent_usage_section),
    Section("images", "Images", images_section),
    Section("task-metrics", "Task metrics", task_metrics_section),
    Section("eval", "Every number in eval.json", eval_table_section),
    Section("config", "Configs", config_section),
]


def section_index(key: str) -> int:
    """The position of the section called ``key`` in SECTIONS (to insert a family's section before it)."""
    keys = [section.key for section in SECTIONS]
    if key not in keys:
        raise ConfigError(f"no report section {key!r}; the sections are {', '.join(keys)}")
    return keys.index(key)


# --------------------------------------------------------------------------- CVAE completions and recommendations (issue 6)

COMPLETION_ROWS, COMPLETION_SAMPLES = 6, 6  # test digits shown, completions per digit
EXAMPLE_USERS, TOP_N = 4, 10  # test users shown, recommendations per user


def _trained(r: RunView) -> bool:
    return (r.path / CHECKPOINT).is_file() or (r.path / BEST).is_file()


def per_task_runs(runs: Sequence[RunView], task: str, kind: str, what: str, body: Callable[[RunView], str]) -> str:
    """One block per trained run of ``task`` (its title, then ``body(run)``); a note for untrained runs and when none is of ``task``."""
    chosen = [r for r in runs if r.config.task == task]
    if not chosen:
        return note(f"no {kind} runs (task {task!r}) among these runs")
    blocks = []
    for r in chosen:
        title = f"<h3>{html.escape(r.label)}</h3>"
        blocks.append(title + (body(r) if _trained(r) else note(f"no checkpoint yet: train the run to see its {what}")))
    return "".join(blocks)


def completion_grid_block(page: Page, caption: Callable[[RunView], str]) -> Callable[[RunView], str]:
    """The body of a completion-grid section: the run's grid (``run_completion_grid``) as a PNG with ``caption(run)``.

    One function for every conditional image family (CVAE quadrants, VAEAC inpainting).
    """
    from .completions import png_bytes, run_completion_grid

    def body(r: RunView) -> str:
        grid = run_completion_grid(r.path, n=COMPLETION_SAMPLES, rows=COMPLETION_ROWS)
        return page.png(png_bytes(grid), f"{_slug(r.label)}-completions", caption(r))

    return body


def completions_section(runs: Sequence[RunView], page: Page) -> str:
    """For quadrant-completion runs (CVAE, GSNN, NN): a few test digits completed several times from p(z | c)."""

    def caption(r: RunView) -> str:
        given = r.config.data.given_quadrants
        return (f"each row a test digit: first the truth, then {COMPLETION_SAMPLES} completions, each the mean of "
                f"p(x | z, c) at z ~ p(z | c); the {given} given quadrant(s) in blue, the predicted ones in grey")

    return per_task_runs(runs, "quadrants", "quadrant-completion", "completions", completion_grid_block(page, caption))


def recommendation_examples_data(run_dir: str | Path, users: int = EXAMPLE_USERS, n: int = TOP_N) -> list[dict[str, Any]]:
    """The first ``users`` test users of a recommender run: their fold-in history, their top-``n`` items
    (``Recommender.recommend`` on the history, seen items excluded) and which of those are held-out targets.

    Items are (original id, title, ...) as the run's ``split/ids.npz`` keeps them; title is "" where unknown.
    """
    from .data.interactions import InteractionSplit
    from .recommendation import SPLIT_DIR, Recommender

    split = InteractionSplit.load(Path(run_dir) / SPLIT_DIR)
    rec = Recommender.from_run(run_dir)
    history = split.test_in[:users]
    if history.shape[0] == 0:
        return []
    top, scores = rec.recommend(history, N=n)  # [U, n]

    def item(column: int) -> tuple[str, str]:
        return str(rec.item_ids[column]), str(rec.item_titles[column])

    examples = []
    for u in range(history.shape[0]):
        targets = set(split.test_out[u].indices.tolist())
        examples.append({
            "user": str(split.test_user_ids[u]),
            "history": [item(col) for col in history[u].indices.tolist()],
            "recommendations": [(*item(col), float(s), col in targets) for col, s in zip(top[u].tolist(), scores[u].tolist())],
            "n_targets": len(targets),
        })
    return examples


def _item_name(item_id: str, title: str) -> str:
    return html.escape(f"{title} ({item_id})" if title else item_id)


def recommendations_section(runs: Sequence[RunView], page: Page) -> str:
    """For recommender runs: a few test users' histories with their top-10 items, hits on held-out targets marked."""

    def body(r: RunView) -> str:
        examples = recommendation_examples_data(r.path)
        if not examples:
            return note("the run's split has no test users")
        rows = []
        for e in examples:
            hits = sum(hit for *_, hit in e["recommendations"])
            history = "; ".join(_item_name(i, t) for i, t in e["history"])
            top = "".join(
                f'<li class="{"hit" if hit else "miss"}">{"✓ " if hit else ""}{_item_name(i, t)}</li>'
                for i, t, _, hit in e["recommendations"]
            )
            rows.append([html.escape(e["user"]), f'<span class="list">{history}</span>', f'<ol class="top">{top}</ol>',
                         f"{hits} / {min(TOP_N, e['n_targets'])}"])
        return html_table(["test user", "history (fold-in items)", f"top {TOP_N} (✓ = a held-out target)", "hits"],
                          rows, "recommendations")

    blocks = per_task_runs(runs, "recommendation", "recommender", "recommendations", body)
    if not any(r.config.task == "recommendation" for r in runs):
        return blocks
    caption = ("the first test users of each run's split: their fold-in items are the model's input, their held-out "
               "items the targets; the ranking excludes items already in the history (as in the test metrics)")
    return blocks + f'<p class="meta">{html.escape(caption)}</p>'


SECTIONS.insert(section_index("task-metrics"), Section("completions", "Completions (CVAE and baselines)", completions_section))
SECTIONS.insert(section_index("task-metrics"), Section("recommendations", "Recommendations for test users", recommendations_section))


# --------------------------------------------------------------------------- VAEAC inpainting and imputation (issues 5, 6)


def inpainting_section(runs: Sequence[RunView], page: Page) -> str:
    """For image VAEAC runs: test digits under their fixed test masks, inpainted several times from p(z | x_{1-b}, b)."""

    def caption(r: RunView) -> str:
        bound = r.config.bound
        return (f"each row a test digit under its test mask ({bound.mask}, level {bound.mask_level}): first the given "
                f"pixels with the hole in red, then {COMPLETION_SAMPLES} inpaintings, each the mean of "
                f"p(x_b | z, x_(1-b), b) at z ~ p(z | x_(1-b), b), then the truth; given pixels in blue, inpainted ones in grey")

    return per_task_runs(runs, "inpainting", "image VAEAC", "inpaintings", completion_grid_block(page, caption))


def imputation_rows(results: dict[str, Any]) -> list[list[str]]:
    """The cells of the method-comparison table: data set (rows), method, NRMSE and PFC as mean ± std over seeds, seconds."""
    from .imputation import imputation_summary

    def spread(mean: float, std: float) -> str:
        return "–" if math.isnan(mean) else f"{_num(mean)} ± {_num(std)}"

    return [[html.escape(f"{row['dataset']} ({row['rows']})"), html.escape(row["method"]), spread(row["nrmse"], row["nrmse_std"]),
             spread(row["pfc"], row["pfc_std"]), _num(row["seconds"]), _num(row["seeds"])] for row in imputation_summary(results)]


def imputation_section(runs: Sequence[RunView], page: Page) -> str:
    """For tabular (VAEAC) runs: the run's own NRMSE / PFC, and the per-method, per-data-set comparison next to it."""
    from .imputation import BENCHMARK_RESULTS

    chosen = [r for r in runs if r.config.task == "tabular" or (r.path / BENCHMARK_RESULTS).is_file()]
    if not chosen:
        return note("no imputation runs (task 'tabular') among these runs")
    blocks = []
    for r in chosen:
        out = f"<h3>{html.escape(r.label)}</h3>"
        own = (r.eval or {}).get("task_metrics", {})
        if "nrmse" in own:
            level = own.get("test_mask_level", "")
            out += html_table(["this run", "data set", "NRMSE", "PFC", "imputations"],
                              [[f"VAEAC on its held-out rows, {_num(level)} MCAR", html.escape(r.config.data.name),
                                _num(own["nrmse"]), _num(own.get("pfc", "")), _num(own.get("num_imputations", ""))]], "numbers")
        elif r.config.task == "tabular":
            out += note("not evaluated yet (no NRMSE / PFC in eval.json): run `elbolab evaluate RUN` for this run's own numbers")
        path = r.path / BENCHMARK_RESULTS
        try:
            results = json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            results = None
            out += note(f"{path.name} cannot be read (damaged JSON): re-run benchmarks/imputation.py --run {r.path}")
        if not path.is_file():
            out += note(f"no method comparison ({BENCHMARK_RESULTS}) in this run: `python benchmarks/imputation.py "
                        f"--run {r.path}` writes VAEAC beside mean/mode, MICE and missForest-style for the report")
        elif results is not None:
            out += html_table(["data set (rows)", "method", "NRMSE", "PFC", "fit + impute s", "mask seeds"],
                              imputation_rows(results), "numbers imputation")
            out += ('<p class="meta">the VAEAC paper\'s protocol (Ivanov et al. 2019, sec. 5.2): '
                    f"{_num(results.get('args', {}).get('missing', 0.5))} of the cells hidden completely at random, "
                    "every method fits on the masked table and imputes the same rows; NRMSE = RMSE on the hidden "
                    "entries / std of the true column, averaged over real columns; PFC = share of hidden categorical "
                    "entries imputed wrongly; mean ± std over mask seeds</p>")
        blocks.append(out)
    return "".join(blocks)


SECTIONS.insert(section_index("task-metrics"), Section("inpainting", "Inpainting (VAEAC)", inpainting_section))
SECTIONS.insert(section_index("task-metrics"), Section("imputation", "Imputation: NRMSE / PFC per method and data set", imputation_section))


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1280px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
nav a { margin-right: 0.9em; } .meta { color: #666; font-size: 0.9em; }
figure { margin: 0.6em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .row > * { flex: 1 1 0; min-width: 320px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
table.numbers td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
.list { display: inline-block; max-width: 60em; text-align: left; font-size: 0.8em; color: #444; word-spacing: 0.3em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
ol.top { margin: 0; padding-left: 1.6em; } li.hit { color: #1a7f37; font-weight: 600; }
pre { background: #f6f8fa; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }
"""


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path = "report.html",
    *,
    title: str | None = None,
    sections: Sequence[Section] | None = None,
) -> Path:
    """Write the ELBO analysis report of ``run_dirs`` to ``out`` (one self-contained HTML file) and return its path.

    Every figure is also written as a PNG into ``<out stem>_files/`` beside it. A run missing a
    piece (no eval.json, no checkpoint) gets a note in that section, never an error.
    """
    from . import __version__

    runs = read_runs(run_dirs)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"the report is an HTML file: give -o NAME.html, not {out}")
    page = Page(out.parent / f"{out.stem}_files")
    chosen = SECTIONS if sections is None else sections
    blocks = [f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{s.render(runs, page)}</section>' for s in chosen]
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title.split(" (")[0])}</a>' for s in chosen)
    heading = title or "ELBO report: " + ", ".join(r.label for r in runs)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    document = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(heading)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(heading)}</h1>"
        f'<p class="meta">elbolab {__version__}, {stamp}; {len(runs)} run(s). All bounds and terms in nats per test example '
        f"(higher bound is better). Figures also saved as PNG in {html.escape(page.png_dir.name)}/.</p>"
        f"<nav>{nav}</nav>{''.join(blocks)}</body></html>\n"
    )
    page.save()
    write_text(out, document)
    return out
