"""Completion grids for quadrant runs (CVAE) and image VAEAC runs: several completions per test digit, drawn from the prior network.

Row r shows test digit r: first the true image, then ``n`` completions, each
the mean of p(x | z, c) at a fresh z ~ p(z | c). Given quadrants are drawn in
blue, predicted ones in grey, so the eye sees at once what the model was told
and what it made up; a CVAE's columns differ (it captures the modes), the NN
baseline's are identical (one blurred guess). ``completion_grid`` returns the
RGB array (for reports), ``sample_completions`` writes a PNG for a run.
``inpainting_grid`` is the same picture for VAEAC (issue 5): per row the
given pixels with the hole in red, several inpaintings, then the truth.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, RunError
from .models import LatentVariableModel
from .quadrants import check_given, given_mask, image_side, merge_quadrants
from .runs import atomic_write, load, read_config, require_run
from .tasks import make_task, resolve_device

GIVEN_INK, GIVEN_PAPER = np.array([150, 200, 255]), np.array([20, 40, 110])  # blue: what the model was given
PREDICTED_INK, PREDICTED_PAPER = np.array([255, 255, 255]), np.array([0, 0, 0])
SEPARATOR = np.array([128, 128, 128])


HIDDEN_MARK = np.array([150, 40, 40])  # dark red: a hole the model is asked to fill (inpainting grids)


def colour_grid(images: np.ndarray, given: np.ndarray, scale: int = 2, holes: np.ndarray | None = None) -> np.ndarray:
    """Tile columns of square images into one RGB uint8 grid [H, W, 3]; row i is example i, column j is ``images[j]``.

    ``images`` [C, B, P] in [0, 1]; ``given`` [B, P] (or [P]) is True on the
    pixels the model was given (drawn in blue; the rest in grey). Where
    ``holes`` [C] is True, that column shows only the given pixels, its
    hidden ones painted dark red. Shared by the CVAE completion grid and the
    VAEAC inpainting grid.
    """
    n_cols, n_rows, n_pixels = images.shape
    side = image_side(n_pixels)
    mask = np.broadcast_to(given, (n_rows, n_pixels))[None, :, :, None]  # [1, B, P, 1]
    ink = np.where(mask, GIVEN_INK, PREDICTED_INK)  # [1, B, P, 3]
    paper = np.where(mask, GIVEN_PAPER, PREDICTED_PAPER)
    rgb = paper + images[..., None] * (ink - paper)  # [C, B, P, 3]
    if holes is not None:
        hole = np.asarray(holes, dtype=bool)[:, None, None, None] & ~mask  # [C, B, P, 1]
        rgb = np.where(hole, HIDDEN_MARK, rgb)
    tiles = rgb.reshape(n_cols, n_rows, side, side, 3).repeat(scale, axis=2).repeat(scale, axis=3)
    tile = side * scale
    grid = np.empty((n_rows * (tile + 1) + 1, n_cols * (tile + 1) + 1, 3))
    grid[:] = SEPARATOR
    for i in range(n_rows):
        for j in range(n_cols):
            grid[1 + i * (tile + 1) : (i + 1) * (tile + 1), 1 + j * (tile + 1) : (j + 1) * (tile + 1)] = tiles[j, i]
    return grid.round().astype(np.uint8)


def _check_grid(n: int, scale: int) -> None:
    if n < 1 or scale < 1:
        raise ConfigError(f"a completion grid needs n >= 1 completions and scale >= 1, got n={n}, scale={scale}")


@torch.no_grad()
def completion_grid(
    model: LatentVariableModel, c: torch.Tensor, x_true: torch.Tensor, given: int, n: int = 8, scale: int = 2
) -> np.ndarray:
    """An RGB uint8 image [H, W, 3]: per row the true digit then ``n`` completions from p(z | c).

    ``c`` [B, G] are the given pixels and ``x_true`` [B, P - G] the true
    predicted pixels of B test digits; ``scale`` repeats each pixel.
    """
    _check_grid(n, scale)
    completions = model.sample(n, c)  # [n, B, P - G]: means of p(x | z, c), z ~ p(z | c)
    columns = torch.cat([x_true.unsqueeze(0).to(completions.dtype), completions], dim=0)  # [n + 1, B, P - G]
    images = merge_quadrants(columns, c, given).clamp(0, 1).cpu().numpy()  # [n + 1, B, P]
    return colour_grid(images, given_mask(image_side(images.shape[-1]), given).numpy(), scale)


@torch.no_grad()
def inpainting_grid(model: LatentVariableModel, x: torch.Tensor, c: torch.Tensor, n: int = 8, scale: int = 2) -> np.ndarray:
    """An RGB uint8 image [H, W, 3] for an image VAEAC: per row the given pixels (hole in red), ``n`` inpaintings, the truth.

    ``x`` [B, P] are test images and ``c`` = [x_{1-b}, b] [B, 2P] their
    conditions (``make_condition``); each inpainting is the mean of
    p(x_b | z, x_{1-b}, b) at a fresh z ~ p(z | x_{1-b}, b), the given pixels kept.
    """
    _check_grid(n, scale)
    given = c[:, x.shape[1] :] > 0.5  # [B, P]
    samples = torch.where(given, x, model.sample(n, c))  # [n, B, P]
    columns = torch.cat([x.unsqueeze(0), samples, x.unsqueeze(0)], dim=0).clamp(0, 1).cpu().numpy()  # [n + 2, B, P]
    holes = np.zeros(n + 2, dtype=bool)
    holes[0] = True
    return colour_grid(columns, given.cpu().numpy(), scale, holes)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array [H, W, 3] encoded as PNG (8-bit truecolour, no filter, zlib)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConfigError(f"png_bytes needs an RGB uint8 array [H, W, 3], got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))  # filter type 0 per scanline
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def sample_completions(
    run_dir: str | Path,
    out: str | Path,
    *,
    given: int | None = None,
    n: int = 8,
    rows: int = 8,
    seed: int = 0,
    device: str = "cpu",
    which: str = "best",
) -> Path:
    """Write a PNG grid of ``n`` completions for each of the first ``rows`` test digits of a quadrants run.

    ``given`` (1..3) must match the run's ``data.given_quadrants`` when
    given: a model predicts only the quadrants it was trained to predict.
    """
    if given is not None:
        check_given(given)
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"the completion grid is a PNG image: --out must end in .png, got {out}")
    grid = run_completion_grid(run_dir, given=given, n=n, rows=rows, seed=seed, device=device, which=which)
    atomic_write(out, lambda tmp: tmp.write_bytes(png_bytes(grid)))
    return out


def run_completion_grid(
    run_dir: str | Path,
    *,
    given: int | None = None,
    n: int = 8,
    rows: int = 8,
    seed: int = 0,
    device: str = "cpu",
    which: str = "best",
) -> np.ndarray:
    """The completion grid (RGB uint8) of the first ``rows`` test digits of a quadrants run, ``n`` completions each.

    Shared by ``sample_completions`` (a PNG file) and the report's completion section.
    """
    if n < 1 or rows < 1:
        raise ConfigError(f"--n and --rows must be >= 1, got n={n}, rows={rows}")
    run = require_run(run_dir)
    config = read_config(run)
    if config.task not in ("quadrants", "inpainting"):
        raise RunError(f"{run} was trained on task {config.task!r}; completions need a quadrant-completion run "
                       f"(task 'quadrants') or an image VAEAC run (task 'inpainting')")
    if given is not None and config.task == "quadrants" and given != config.data.given_quadrants:
        raise ConfigError(
            f"{run} was trained with {config.data.given_quadrants} given quadrant(s), got --given {given}; "
            f"use --given {config.data.given_quadrants} or a run trained with data.given_quadrants={given}"
        )
    dev = resolve_device(device)
    model = load(run, which=which, device=dev)
    task = make_task(config, dev)
    x, c = next(task.test_batches(rows, rows))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.task == "inpainting":  # the test images under their fixed test masks
            return inpainting_grid(model, x, c, n=n)
        return completion_grid(model, c, x, config.data.given_quadrants, n=n)
