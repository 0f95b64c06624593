"""The ELBO analysis report: each plot's data is the run's numbers, each drawing
draws that data, and the page a person opens holds every image and number."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from elbolab.cli import app
from elbolab.errors import ConfigError, RunError
from elbolab.evaluate import evaluate
from elbolab.plots import (
    draw_inference_gaps,
    draw_latent_usage,
    draw_metric_curves,
    draw_rate_distortion,
    draw_tightness,
    draw_training_curves,
    image_panels,
    image_side,
    inference_gaps_data,
    latent_usage_data,
    metric_curves_data,
    project_2d,
    rate_distortion_data,
    tightness_data,
    tile,
    training_curves_data,
    updates_per_epoch,
)
from elbolab.report import SECTIONS, _num, flatten_numbers, section_index, write_report
from elbolab.runs import load, read_eval, read_metrics
from elbolab.train import train

from conftest import tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny real runs on the 8x8 digits: one trained and evaluated, one trained only."""
    root = tmp_path_factory.mktemp("runs")
    done = train(tiny_config(), root / "vae", progress=False)
    evaluate(done, progress=False)
    fresh = train(tiny_config("train.epochs=1", "bound.beta=2.0"), root / "beta2", progress=False)
    return done, fresh


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    """The full report of both runs, written once (the page the browser test opens)."""
    return write_report(runs, tmp_path_factory.mktemp("report") / "report.html")


def close(actual, expected, **kw) -> None:
    """Drawn coordinates (matplotlib keeps them as given: lists or object arrays) against expected numbers."""
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), **kw)


def png_uris(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


# --------------------------------------------------------------------------- each plot's data is the run's numbers


def test_training_curves_data_and_drawing_are_the_metrics(runs):
    metrics = read_metrics(runs[0])
    data = training_curves_data(metrics)
    assert data["epoch"] == [1, 2, 3]
    assert data["terms"]["bound"]["train"] == [r["train_bound"] for r in metrics]
    assert data["terms"]["bound"]["test"] == [r["test_elbo"] for r in metrics]
    assert data["terms"]["kl"]["test"] == [r["test_kl"] for r in metrics]
    assert data["terms"]["beta"]["train"] == [r["beta"] for r in metrics]
    assert updates_per_epoch([data]) == metrics[0]["step"] == metrics[1]["step"] - metrics[0]["step"]
    assert updates_per_epoch([data, {"epoch": [1], "step": [7]}]) is None  # runs that disagree: no single figure
    fig = draw_training_curves([("vae", data)])
    bound_ax, rec_ax = fig.axes[0], fig.axes[1]
    assert bound_ax.get_xlabel() == f"epoch (1 epoch = {metrics[0]['step']:,} updates)"
    close(bound_ax.lines[0].get_ydata(), [r["train_bound"] for r in metrics])
    close(bound_ax.lines[1].get_ydata(), [r["test_elbo"] for r in metrics])
    close(rec_ax.lines[0].get_ydata(), [r["train_reconstruction"] for r in metrics])
    assert "nats" in bound_ax.get_ylabel()


def test_metric_curves_plot_every_other_valid_and_test_key():
    records = [
        {"epoch": 1, "train_bound": -5.0, "test_elbo": -6.0, "valid_ndcg@100": 0.30, "valid_recall@20": 0.25},
        {"epoch": 2, "train_bound": -4.0, "test_elbo": -5.0, "valid_ndcg@100": 0.35},
    ]
    data = metric_curves_data(records, skip={"test_elbo"})
    assert data == {"valid_ndcg@100": {"epoch": [1, 2], "value": [0.30, 0.35]}, "valid_recall@20": {"epoch": [1], "value": [0.25]}}
    fig = draw_metric_curves([("cf", data)])
    close(fig.axes[0].lines[0].get_ydata(), [0.30, 0.35])
    assert fig.axes[0].get_title() == "valid_ndcg@100"


def test_rate_distortion_points_are_kl_and_minus_reconstruction(runs):
    result = read_eval(runs[0])
    (point,) = rate_distortion_data([("vae", result)])
    assert point["rate"] == result["kl"]["mean"]
    assert point["distortion"] == -result["reconstruction"]["mean"]
    assert point["distortion"] + point["rate"] == pytest.approx(-result["elbo"]["mean"])
    fig = draw_rate_distortion([point, {**point, "label": "other", "rate": point["rate"] + 3, "beta": 2.0}])
    ax = fig.axes[0]
    drawn = [line for line in ax.lines if line.get_marker() == "o"]
    close([line.get_xdata()[0] for line in drawn], [point["rate"], point["rate"] + 3])
    close([line.get_ydata()[0] for line in drawn], [point["distortion"]] * 2)
    iso = [line for line in ax.lines if line.get_color() == "0.75"]
    assert len(iso) >= 2 and all(np.allclose(np.diff(line.get_ydata()) / np.diff(line.get_xdata()), -1) for line in iso)


def test_tightness_data_is_the_bound_curve_and_the_gap_adds_up(runs):
    result = read_eval(runs[0])
    data = tightness_data(result)
    assert data["k"] == [1, 5, 50]
    assert data["mean"] == [result["bound_curve"][k]["mean"] for k in ("1", "5", "50")]
    assert data["se"] == [result["bound_curve"][k]["se"] for k in ("1", "5", "50")]
    assert [label for label, _ in data["recovered"]] == ["ELBO → L_1", "L_1 → L_5", "L_5 → L_50"]
    assert sum(v for _, v in data["recovered"]) == pytest.approx(result["gap"]["mean"], abs=1e-9)
    assert data["recovered"][1][1] > 0 and data["recovered"][2][1] > 0  # L_k rises with k
    fig = draw_tightness([("vae", data)])
    close(fig.axes[0].lines[0].get_ydata(), data["mean"])
    bars = fig.axes[1].patches
    close([b.get_width() for b in bars], [v for _, v in data["recovered"]])


def test_latent_usage_is_sorted_eval_numbers_with_the_threshold(runs):
    result = read_eval(runs[0])
    data = latent_usage_data(result)
    assert data["cov_sorted"] == sorted(result["active_units"]["cov"], reverse=True)
    assert data["kl_sorted"] == sorted(result["kl_per_dim"], reverse=True)
    assert [result["active_units"]["cov"][u] for u in data["cov_dims"]] == data["cov_sorted"]
    assert sum(c > data["threshold"] for c in data["cov_sorted"]) == result["active_units"]["count"]
    fig = draw_latent_usage([("vae", data)])
    close(fig.axes[0].lines[0].get_ydata(), data["kl_sorted"])
    close(fig.axes[1].lines[0].get_ydata(), data["cov_sorted"])
    close(fig.axes[1].lines[1].get_ydata(), [0.01, 0.01])


GAPS = {
    "n_examples": 20,
    "elbo_amortized": {"mean": -30.0, "se": 0.5},
    "elbo_optimized": {"mean": -28.5, "se": 0.5},
    "log_likelihood": {"k": 5000, "mean": -27.0, "se": 0.4},
    "approximation_gap": {"mean": 1.5, "se": 0.1},
    "amortization_gap": {"mean": 1.5, "se": 0.2},
}


def test_inference_gaps_stack_to_log_likelihood_minus_amortized_elbo():
    assert inference_gaps_data({"elbo": {}}) is None
    data = inference_gaps_data({"inference_gaps": {**GAPS, "amortization_gap": {"mean": 1.25, "se": 0.2}}})
    assert (data["approximation_gap"], data["amortization_gap"]) == (1.5, 1.25)
    fig = draw_inference_gaps([("vae", data)])
    approx, amort = fig.axes[0].patches
    assert approx.get_height() == 1.5 and amort.get_height() == 1.25 and amort.get_y() == 1.5


def test_image_panels_are_the_models_outputs(runs):
    panels = image_panels(runs[0], n_show=6, n_scatter=100)
    assert panels.side == 8 and panels.inputs.shape == (6, 8, 8) and panels.samples.shape[1:] == (8, 8)
    from elbolab.runs import read_config
    from elbolab.tasks import make_task

    task = make_task(read_config(runs[0]))
    x = task.x_test[:100]
    close(panels.inputs, x[:6].reshape(6, 8, 8).numpy())
    model = load(runs[0])
    with torch.no_grad():
        means = model.posterior(x).mean
        expected = model.likelihood(means[:6]).mean.reshape(6, 8, 8)
    close(panels.reconstructions, expected.numpy(), atol=1e-6)
    assert np.array_equal(panels.labels, task.test_labels(100).numpy())
    assert panels.means_2d.shape == (100, 2) and "PCA" in panels.projection
    top = int(torch.argmax(means.var(0)))
    assert panels.traversal_dims[0] == top and panels.traversal.shape == (5, 9, 8, 8)


def test_image_helpers():
    assert image_side(784) == 28 and image_side(64) == 8 and image_side(100) == 10 and image_side(50) is None
    mosaic = tile(np.zeros((3, 2, 2)), cols=2)
    assert mosaic.shape == (5, 5) and np.isnan(mosaic[0, 2]) and np.isnan(mosaic[3, 3]) and mosaic[3, 0] == 0
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 2)) * [5.0, 1.0] @ np.array([[0.6, 0.8], [-0.8, 0.6]])
    lifted = np.concatenate([points, 1e-3 * rng.normal(size=(200, 3))], axis=1)
    projected, how, _ = project_2d(lifted)
    assert abs(np.corrcoef(projected[:, 0], points @ [0.6, 0.8])[0, 1]) > 0.99 and "100%" in how


# --------------------------------------------------------------------------- the page


def test_report_embeds_every_figure_and_number_and_notes_missing_pieces(runs, page):
    text = page.read_text()
    result = read_eval(runs[0])
    for number in (result["elbo"]["mean"], result["log_likelihood"]["mean"], result["gap"]["mean"], result["kl"]["mean"]):
        assert _num(number) in text
    for path, value in flatten_numbers(result):
        assert path in text  # every number of eval.json has its row
    assert "not evaluated yet (no eval.json): beta2" in text
    assert "no inference-gap analysis" in text
    images = png_uris(text)
    pngs = sorted((page.parent / "report_files").glob("*.png"))
    assert len(images) == len(pngs) >= 9  # training, rate-distortion, tightness, latent usage, 2 x 4 image panels
    assert sorted(images) == sorted(p.read_bytes() for p in pngs)
    from matplotlib.image import imread

    for data in images:
        assert imread(io.BytesIO(data), format="png").shape[0] > 50
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert links and all(link.startswith(("data:image/png;base64,", "#")) for link in links)  # nothing fetched: opens offline
    for section in SECTIONS:
        assert f'id="{section.key}"' in text


def test_report_draws_inference_gaps_and_task_metrics_when_present(runs, tmp_path):
    run = tmp_path / "copy"
    import shutil

    shutil.copytree(runs[0], run)
    result = read_eval(run)
    result["inference_gaps"] = GAPS
    result["task_metrics"] = {"ndcg@100": {"mean": 0.4321, "se": 0.01}, "nrmse": 0.875}
    (run / "eval.json").write_text(json.dumps(result))
    chosen = [s for s in SECTIONS if s.key in ("inference-gaps", "task-metrics")]
    text = write_report([run], tmp_path / "r.html", sections=chosen).read_text()
    assert 'data-png="inference-gaps.png"' in text and "no inference-gap analysis" not in text
    assert "0.432 ± 0.010" in text and "0.875" in text


def test_report_errors_are_clear(tmp_path, runs):
    with pytest.raises(RunError, match="not a run directory"):
        write_report([tmp_path], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="HTML"):
        write_report([runs[0]], tmp_path / "r.pdf")
    assert SECTIONS[section_index("task-metrics")].key == "task-metrics"
    with pytest.raises(ConfigError, match="no report section 'ranking'"):
        section_index("ranking")
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "not a run directory" in result.output


def test_report_command_of_an_untrained_run_is_notes_not_a_crash(tmp_path):
    from elbolab.runs import write_config

    write_config(tmp_path / "empty", tiny_config())
    result = runner.invoke(app, ["report", str(tmp_path / "empty"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.html").read_text()
    assert "no metrics.jsonl records yet" in text and "no checkpoint yet" in text and "not evaluated yet" in text


# --------------------------------------------------------------------------- in a real browser

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Appended to a copy of the page: after load, record every <img>'s decoded size in the DOM.
IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(images.map(function (i) {
    return {alt: i.alt, ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth};
  }));
  document.body.appendChild(out);
});
</script>"""
BROKEN = '<img alt="deliberately broken probe" src="data:image/png;base64,iVBORw0KGgoAAAAA">'


def chromium() -> str:
    """The chromium executable; outside CI a missing browser skips, under CI it fails (.ci/run installs it)."""
    import os
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it with apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install chromium); the browser test needs it")


@pytest.fixture(scope="module")
def browser() -> str:
    """Module-scoped and listed first, so a missing browser skips before the runs are trained."""
    return chromium()


def browse(exe: str, page_file, tmp_path, *args: str) -> str:
    import subprocess

    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    done = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page_file.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_opens_in_chromium_with_every_image_and_number(browser, runs, page, tmp_path):
    from html import unescape

    from matplotlib.image import imread

    shot = tmp_path / "screenshot.png"
    browse(browser, page, tmp_path, "--window-size=1280,2400", "--hide-scrollbars", f"--screenshot={shot}")
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and pixels[..., :3].std() > 0.05  # a drawn page, not a blank one

    probe = page.parent / "probe.html"  # a copy beside the original, plus one broken image the probe must catch
    probe.write_text(page.read_text().replace("</body>", BROKEN + IMAGE_PROBE + "</body>"))
    dom = browse(browser, probe, tmp_path, "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, flags=re.S)
    assert found, dom[-500:]
    images = json.loads(unescape(found.group(1)))
    broken = [i["alt"] for i in images if not i["ok"]]
    assert broken == ["deliberately broken probe"]
    assert len(images) - 1 == len(png_uris(page.read_text())) >= 9
    text = unescape(re.sub(r"<[^>]+>", " ", dom))
    result = read_eval(runs[0])
    for number in (result["elbo"]["mean"], result["log_likelihood"]["mean"], result["gap"]["mean"]):
        assert _num(number) in text
    assert "Rate-distortion plane" in text and "not evaluated yet (no eval.json): beta2" in text


# --------------------------------------------------------------------------- sweep and quickstart


def test_sweep_trains_evaluates_and_reports_the_grid_and_resumes(tmp_path):
    from elbolab.sweep import parse_grid, split_values

    assert split_values("0.25,0.5,[1, 2],'a,b'") == ["0.25", "0.5", "[1, 2]", "'a,b'"]
    with pytest.raises(ConfigError, match="betta"):
        parse_grid(["betta=1,2"])
    no_grid = runner.invoke(app, ["sweep", "--preset", "vae-digits", "--out", str(tmp_path / "none")])
    assert no_grid.exit_code == 1 and "a sweep needs at least one --set" in no_grid.output
    out = tmp_path / "sweep"
    args = ["sweep", "--preset", "vae-digits", "--set", "beta=0.5,2", "--set", "train.eval_subset=50", "--epochs", "2",
            "--n-images", "40", "--ks", "1,5", "--out", str(out), "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    runs_made = [out / "beta-0.5", out / "beta-2"]
    assert [read_eval(r)["beta"] for r in runs_made] == [0.5, 2.0]
    assert all(len(read_metrics(r)) == 2 for r in runs_made)
    assert f"report: {out / 'report.html'}" in result.output
    text = (out / "report.html").read_text()
    assert 'data-png="rate-distortion.png"' in text
    for r in runs_made:
        assert _num(read_eval(r)["elbo"]["mean"]) in text
    assert read_eval(runs_made[1])["kl"]["mean"] < read_eval(runs_made[0])["kl"]["mean"]  # larger beta, lower rate
    stamps = [(r / name).stat().st_mtime_ns for r in runs_made for name in ("checkpoint.pt", "eval.json")]
    from elbolab import sweep
    from elbolab.config import apply_overrides, load_preset

    config = apply_overrides(load_preset("vae-digits"), ["train.epochs=2"])
    again = sweep(config, parse_grid(["beta=0.5,2", "train.eval_subset=50"]), out, n_images=40, ks=[1, 5], report=False, progress=False)
    assert again.runs == runs_made and again.report is None
    assert [(r / name).stat().st_mtime_ns for r in runs_made for name in ("checkpoint.pt", "eval.json")] == stamps  # nothing redone


def test_quickstart_ends_by_writing_the_report(tmp_path, monkeypatch):
    import elbolab.quickstart as quickstart_module

    monkeypatch.setattr(quickstart_module, "QUICKSTART_PRESETS", ("vae-digits",))  # the MNIST pair takes minutes
    monkeypatch.setattr(quickstart_module, "load_mnist", lambda: None)
    written = []

    def write_some(runs, out, **kwargs):  # the full page is tested above; here only that the quickstart writes it
        written.append(list(runs))
        return write_report(runs, out, sections=SECTIONS[:2], **kwargs)

    monkeypatch.setattr(quickstart_module, "write_report", write_some)
    table = quickstart_module.quickstart(tmp_path / "qs", epochs=1, n_test=20, progress=False)
    assert table.rstrip().endswith(f"report: {tmp_path / 'qs' / 'report.html'}  (open it in a browser)")
    assert written == [[tmp_path / "qs" / "vae-digits"]]
    text = (tmp_path / "qs" / "report.html").read_text()
    assert "vae-digits" in text and 'data-png="training-curves.png"' in text


# --------------------------------------------------------------------------- CVAE completions and recommendations


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory):
    """A tiny real CVAE quadrant run on the 8x8 digits and a tiny Mult-DAE on a clustered click file, with their report."""
    from test_conditional import quadrant_config
    from test_recommendation import cf_config

    from elbolab.data.interactions import InteractionSplit

    root = tmp_path_factory.mktemp("families")
    cvae = train(quadrant_config("train.epochs=2"), root / "cvae", progress=False)
    rec = train(cf_config(root, "mult-dae-ml100k", "train.epochs=3"), root / "rec", progress=False)
    split = InteractionSplit.load(rec / "split")  # the clicks file has no titles: give the items some, as ML-100K has
    split.item_titles = np.array([f"Film {i}" for i in split.item_ids])
    split.save(rec / "split")
    return cvae, rec, write_report([cvae, rec], root / "report.html")


def section_html(text: str, key: str) -> str:
    return re.search(rf'<section id="{key}">(.*?)</section>', text, re.S).group(1)


def test_completion_section_embeds_the_runs_completion_grid(family_runs):
    from PIL import Image

    from elbolab.completions import run_completion_grid
    from elbolab.report import COMPLETION_ROWS, COMPLETION_SAMPLES

    cvae, _, page_file = family_runs
    block = section_html(page_file.read_text(), "completions")
    (png,) = png_uris(block)
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    expected = run_completion_grid(cvae, n=COMPLETION_SAMPLES, rows=COMPLETION_ROWS)
    np.testing.assert_array_equal(shown, expected)  # the truth and the completions of the first test digits
    assert shown.shape[:2] == (COMPLETION_ROWS * 17 + 1, (COMPLETION_SAMPLES + 1) * 17 + 1)  # 8x8 digits at scale 2
    assert (page_file.parent / "report_files" / "cvae-completions.png").read_bytes() == png
    assert SECTIONS.index(next(s for s in SECTIONS if s.key == "completions")) < section_index("task-metrics")


def test_recommendation_section_lists_what_recommend_returns_with_hits(family_runs):
    import scipy.sparse as sp

    from elbolab.data.interactions import InteractionSplit
    from elbolab.recommendation import Recommender
    from elbolab.report import EXAMPLE_USERS, TOP_N, recommendation_examples_data

    _, rec, page_file = family_runs
    split = InteractionSplit.load(rec / "split")
    recommender = Recommender.from_run(rec)
    block = section_html(page_file.read_text(), "recommendations")
    examples = recommendation_examples_data(rec)
    assert len(examples) == EXAMPLE_USERS
    for u, example in enumerate(examples):
        history = split.test_in[u].indices
        top, _ = recommender.recommend(history)  # one user's item indices, top 10
        assert [i for i, *_ in example["recommendations"]] == [str(split.item_ids[c]) for c in top]
        assert [hit for *_, hit in example["recommendations"]] == [bool(split.test_out[u, c]) for c in top]
        assert sorted(i for i, _ in example["history"]) == sorted(str(split.item_ids[c]) for c in history)
        row = re.search(rf"<tr><td>{example['user']}</td>(.*?)</tr>", block, re.S).group(1)
        listed = re.findall(r'<li class="(hit|miss)">(?:✓ )?Film (\w+) \(\w+\)</li>', row)
        assert listed == [("hit" if split.test_out[u, c] else "miss", str(split.item_ids[c])) for c in top]
        assert f"{sum(h == 'hit' for h, _ in listed)} / {min(TOP_N, split.test_out[u].nnz)}" in row
        assert f"Film {split.item_ids[history[0]]}" in row  # the history, by title
    assert str(split.test_user_ids[EXAMPLE_USERS]) not in re.findall(r"<tr><td>(\w+)</td>", block)


def test_family_sections_note_when_no_run_of_their_task_is_present(page):
    text = page.read_text()  # the two unconditional image runs
    assert "no quadrant-completion runs (task &#x27;quadrants&#x27;) among these runs" in section_html(text, "completions")
    assert "no recommender runs (task &#x27;recommendation&#x27;) among these runs" in section_html(text, "recommendations")


def probe_page(browser: str, page_file, tmp_path) -> tuple[list[dict], str]:
    """Open a copy of the report with the image probe in Chromium: (every image with its load state, the page's text)."""
    from html import unescape

    probe = page_file.parent / "probe.html"
    probe.write_text(page_file.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    dom = browse(browser, probe, tmp_path, "--virtual-time-budget=10000", "--dump-dom")
    images = json.loads(unescape(re.search(r'<pre id="image-probe">(.*?)</pre>', dom, flags=re.S).group(1)))
    return images, unescape(re.sub(r"<[^>]+>", " ", dom))


def test_family_sections_open_in_chromium(browser, family_runs, tmp_path):
    images, text = probe_page(browser, family_runs[2], tmp_path)
    assert [i["alt"] for i in images if not i["ok"]] == []
    assert any(i["alt"].startswith("each row a test digit") for i in images)
    assert "Recommendations for test users" in text and "held-out target" in text


# --------------------------------------------------------------------------- VAEAC: inpainting grids and the imputation table (issues 5, 6)

IMPUTATION_RESULTS = {  # the shape benchmarks/imputation.py writes (numbers chosen so mean and std are easy to check)
    "args": {"missing": 0.5},
    "datasets": {
        "breast-cancer": {"rows": 569, "runs": {
            "mean/mode": [{"nrmse": 1.0, "pfc": float("nan"), "seconds": 0.5, "seed": 0},
                          {"nrmse": 1.02, "pfc": float("nan"), "seconds": 0.7, "seed": 1}],
            "VAEAC": [{"nrmse": 0.55, "pfc": float("nan"), "seconds": 100.0, "seed": 0},
                      {"nrmse": 0.59, "pfc": float("nan"), "seconds": 110.0, "seed": 1}],
        }},
        "ecoli": {"rows": 336, "runs": {
            "VAEAC": [{"nrmse": 0.9, "pfc": 0.3, "seconds": 50.0, "seed": 0},
                      {"nrmse": 0.96, "pfc": 0.36, "seconds": 70.0, "seed": 1}],
        }},
    },
}


@pytest.fixture(scope="module")
def vaeac_runs(tmp_path_factory):
    """A tiny real image VAEAC (inpainting) run and a tiny real tabular VAEAC run with a method comparison, and their report."""
    from test_inpainting import inpainting_config
    from test_vaeac import vaeac_config

    from elbolab.imputation import BENCHMARK_RESULTS
    from elbolab.runs import write_json

    root = tmp_path_factory.mktemp("vaeac")
    image = train(inpainting_config("train.epochs=2"), root / "inpaint", progress=False)
    table = train(vaeac_config(), root / "table", progress=False)
    evaluate(table, ks=[1, 5], n_images=40, progress=False)
    write_json(table / BENCHMARK_RESULTS, IMPUTATION_RESULTS)
    return image, table, write_report([image, table], root / "report.html")


def test_inpainting_section_embeds_the_runs_inpainting_grid(vaeac_runs):
    from PIL import Image

    from elbolab.completions import run_completion_grid
    from elbolab.report import COMPLETION_ROWS, COMPLETION_SAMPLES

    image, _, page_file = vaeac_runs
    block = section_html(page_file.read_text(), "inpainting")
    (png,) = png_uris(block)
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(shown, run_completion_grid(image, n=COMPLETION_SAMPLES, rows=COMPLETION_ROWS))
    assert shown.shape[:2] == (COMPLETION_ROWS * 17 + 1, (COMPLETION_SAMPLES + 2) * 17 + 1)  # given, samples, truth
    assert "hole in red" in block and "no image VAEAC runs" not in block


def test_imputation_table_numbers_are_the_results_numbers(vaeac_runs):
    from elbolab.imputation import imputation_summary

    _, table, page_file = vaeac_runs
    block = section_html(page_file.read_text(), "imputation")
    shown = re.findall(r"<tr><td>([^<]+) \((\d+)\)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>(\d+)</td></tr>", block)
    expected = []
    for name, entry in IMPUTATION_RESULTS["datasets"].items():
        for method, seeds in entry["runs"].items():
            nrmse = np.array([s["nrmse"] for s in seeds])
            pfc = np.array([s["pfc"] for s in seeds])
            pfc_cell = "–" if np.isnan(pfc).all() else f"{_num(pfc.mean())} ± {_num(pfc.std(ddof=1))}"
            expected.append((name, str(entry["rows"]), method, f"{_num(nrmse.mean())} ± {_num(nrmse.std(ddof=1))}",
                             pfc_cell, _num(float(np.mean([s["seconds"] for s in seeds]))), str(len(seeds))))
    assert shown == expected
    assert shown[1][3] == "0.570 ± 0.028" and shown[2][4] == "0.330 ± 0.042"  # by hand: mean, std (ddof 1) of two seeds
    assert len(imputation_summary(IMPUTATION_RESULTS)) == 3
    own = read_eval(table)["task_metrics"]  # the run's own VAEAC numbers beside the comparison
    assert f"<td>{_num(own['nrmse'])}</td>" in block and "held-out rows" in block


def test_imputation_section_notes_what_is_missing(vaeac_runs, tmp_path):
    from test_vaeac import vaeac_config

    from elbolab.imputation import BENCHMARK_RESULTS

    image, _, _ = vaeac_runs
    chosen = [s for s in SECTIONS if s.key in ("inpainting", "imputation")]
    fresh = train(vaeac_config("train.epochs=1"), tmp_path / "fresh", progress=False)  # not evaluated, no comparison
    text = write_report([image, fresh], tmp_path / "r.html", sections=chosen).read_text()
    block = section_html(text, "imputation")
    assert "not evaluated yet" in block and f"no method comparison ({BENCHMARK_RESULTS})" in block
    (fresh / BENCHMARK_RESULTS).write_text("{ torn")
    assert "cannot be read (damaged JSON)" in section_html(write_report([fresh], tmp_path / "r2.html", sections=chosen).read_text(), "imputation")
    only_images = write_report([image], tmp_path / "r3.html", sections=chosen).read_text()
    assert "no imputation runs (task &#x27;tabular&#x27;) among these runs" in section_html(only_images, "imputation")
    assert "no image VAEAC runs (task &#x27;inpainting&#x27;)" in section_html(write_report([fresh], tmp_path / "r4.html", sections=chosen).read_text(), "inpainting")


def test_vaeac_sections_open_in_chromium(browser, vaeac_runs, tmp_path):
    _, table, page_file = vaeac_runs
    images, text = probe_page(browser, page_file, tmp_path)
    assert [i["alt"] for i in images if not i["ok"]] == []
    assert any(i["alt"].startswith("each row a test digit under its test mask") for i in images)
    assert "Inpainting (VAEAC)" in text and "NRMSE / PFC per method and data set" in text
    for number in ("0.570 ± 0.028", "0.330 ± 0.042", _num(read_eval(table)["task_metrics"]["nrmse"])):
        assert number in text
