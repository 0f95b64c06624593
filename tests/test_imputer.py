"""VAEACImputer in the scikit-learn shape and `elbolab impute` (issue 5).

The command runs in process (typer's CliRunner): tests/test_cli.py already
covers the real subprocess wiring, and each subprocess pays torch's import.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from elbolab import VAEACImputer
from elbolab.imputer import multiple_imputation_path

from typer.testing import CliRunner

from elbolab.cli import app



def one_line_error(args, *needles):
    """In process (fast): exit 1, one line on stderr starting 'elbolab: error:' that holds every needle."""
    result = CliRunner().invoke(app, list(args))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("elbolab: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]

TINY = dict(epochs=2, hidden=[8], latent_dim=2, batch_size=32)


def frame_with_holes(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    frame = pd.DataFrame({
        "height": a * 10 + 170,
        "colour": pd.Series(np.where(a > 0, "red", "blue"), dtype=object),
        "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "weight": a * 5 + 70 + rng.normal(size=n),
    })
    holes = rng.random(frame.shape) < 0.2
    for j, name in enumerate(frame.columns):
        frame.loc[holes[:, j], name] = None
    return frame


def test_constructor_is_keyword_only_and_clone_round_trips_params():
    with pytest.raises(TypeError):
        VAEACImputer(10)  # noqa: the constructor takes keywords only
    imputer = VAEACImputer(**TINY, categorical=["colour"])
    copy = clone(imputer)
    assert copy is not imputer and copy.get_params() == imputer.get_params()
    copy.set_params(epochs=7, lr=1e-2)
    assert copy.epochs == 7 and copy.lr == 1e-2 and imputer.epochs == 2
    assert set(imputer.get_params()) >= {"latent_dim", "hidden", "epochs", "num_imputations", "categorical", "seed"}


def test_dataframe_keeps_columns_index_dtypes_and_labels():
    frame = frame_with_holes()
    frame.index = frame.index + 100
    imputer = VAEACImputer(**TINY)
    out = imputer.fit_transform(frame)
    assert list(out.columns) == list(frame.columns) and (out.index == frame.index).all()
    assert not out.isna().any().any()
    assert out.dtypes.to_dict() == frame.dtypes.to_dict()
    assert set(out["colour"]) <= {"red", "blue"} and (out["count"] == out["count"].round()).all()
    given = frame.notna()
    for name in frame.columns:  # given cells come back untouched
        assert (out[name][given[name]] == frame[name][given[name]]).all()
    assert list(imputer.get_feature_names_out()) == list(frame.columns)
    assert list(imputer.feature_names_in_) == list(frame.columns)


def test_numpy_arrays_and_multiple_imputation():
    x = frame_with_holes()[["height", "weight"]].to_numpy(dtype=float)
    imputer = VAEACImputer(**TINY, num_imputations=3).fit(x)
    assert imputer.n_features_in_ == 2
    out = imputer.transform(x)
    assert isinstance(out, np.ndarray) and out.shape == x.shape and np.isfinite(out).all()
    draws = imputer.sample(x, n_imputations=4)
    assert len(draws) == 4 and all(d.shape == x.shape for d in draws)
    stacked = np.stack(draws)
    missing = np.isnan(x)
    assert (stacked[:, ~missing] == x[~missing]).all()
    assert stacked[:, missing].std(0).mean() > 0  # draws of z differ


def test_transform_before_fit_is_a_clear_error():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        VAEACImputer(**TINY).transform(np.zeros((2, 2)))


def test_inside_a_pipeline():
    frame = frame_with_holes(80)
    x = frame[["height", "weight"]].to_numpy(dtype=float)
    y = np.nan_to_num(x[:, 0]) * 0.5
    pipe = Pipeline([("impute", VAEACImputer(**TINY)), ("regress", LinearRegression())])
    pipe.fit(x, y)
    assert pipe.predict(x).shape == (80,)
    assert clone(pipe).get_params()["impute__epochs"] == 2


def test_save_and_load_give_the_same_imputation(tmp_path):
    frame = frame_with_holes()
    imputer = VAEACImputer(**TINY).fit(frame)
    imputer.save(tmp_path / "model")
    again = VAEACImputer.load(tmp_path / "model")
    pd.testing.assert_frame_equal(again.transform(frame), imputer.transform(frame))


# ---------------------------------------------------------------- the command


def test_impute_command_end_to_end(tmp_path):
    data = tmp_path / "data.csv"
    frame_with_holes().to_csv(data, index=False)
    out = tmp_path / "imputed.csv"
    result = CliRunner().invoke(app, ["impute", str(data), "-o", str(out), "--num-imputations", "3", "--epochs", "2",
                                      "--save-model", str(tmp_path / "model"), "--categorical", "count"])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.stderr  # training progress is shown
    imputed = pd.read_csv(out)
    assert list(imputed.columns) == ["height", "colour", "count", "weight"] and not imputed.isna().any().any()
    original = pd.read_csv(data)
    assert (imputed["count"].isin(original["count"].dropna().unique())).all()  # labels, not codes
    long = pd.read_csv(multiple_imputation_path(out))
    assert list(long.columns[:2]) == ["row_id", "imputation_id"] and len(long) == 3 * len(original)
    # reuse the saved model on new rows, writing parquet
    new = tmp_path / "new.tsv"
    frame_with_holes(20, seed=5).to_csv(new, sep="\t", index=False)
    reused = CliRunner().invoke(app, ["impute", "--model", str(tmp_path / "model"), str(new), "-o",
                                      str(tmp_path / "new.parquet"), "--num-imputations", "1"])
    assert reused.exit_code == 0, reused.output
    assert pd.read_parquet(tmp_path / "new.parquet").shape == (20, 4)
    assert not multiple_imputation_path(tmp_path / "new.parquet").exists()


def test_impute_command_bad_inputs(tmp_path):
    def write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    out = tmp_path / "out.csv"
    one_line_error(("impute", write("e.csv", "a,b\n,1\n,2\n"), "-o", str(out)), "column 'a' is entirely missing")
    one_line_error(("impute", write("n.csv", "a,b\n1,\n2,3\nx,4\n5,5\n"), "-o", str(out)),
                   "column 'a'", "'x'", "not a number")
    one_line_error(("impute", write("g.parquet", "garbage"), "-o", str(out)), "cannot read")
    one_line_error(("impute", str(tmp_path / "none.csv"), "-o", str(out)), "does not exist")
    assert not out.exists()  # nothing half-written
    full = write("full.csv", "a,b\n1,2\n3,4\n")
    result = CliRunner().invoke(app, ["impute", full, "-o", str(out)])
    assert result.exit_code == 0 and "warning: " in result.stderr and "no missing values" in result.stderr
    assert out.read_text() == "a,b\n1,2\n3,4\n"


def test_unseen_category_with_a_saved_model(tmp_path):
    frame = frame_with_holes()
    VAEACImputer(**TINY).fit(frame).save(tmp_path / "model")
    new = frame.copy()
    new.loc[0, "colour"] = "purple"
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "o.csv"
    one_line_error(["impute", "--model", str(tmp_path / "model"), str(tmp_path / "new.csv"), "-o", str(out)],
                   "column 'colour'", "'purple'", "never seen in fit")
    assert not out.exists()
