"""Interaction data (issue 3): reading with clear errors, duplicates, Liang et al.'s split, sources, synthetic shape."""
import filecmp
import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from elbolab.data import sources
from elbolab.data.interactions import (
    Interactions,
    InteractionSplit,
    ML1M_ZIP,
    ML20M_ZIP,
    liang_split,
    load_interactions,
    read_interactions,
    synthetic_interactions,
)
from elbolab.data.sources import UrlSource, VerifiedFile, fetch_file
from elbolab.errors import ChecksumError, ConfigError, DataError

from test_data import server  # noqa: F401  (the 127.0.0.1 file server fixture)


def _write(path, text):
    path.write_text(text)
    return path


def test_read_csv_tsv_and_parquet_with_configured_columns(tmp_path):
    csv = _write(tmp_path / "r.csv", "uid,iid,stars\n1,a,5\n2,b,3.5\n1,b,4\n")
    data = read_interactions(csv, user_col="uid", item_col="iid", rating_col="stars")
    assert list(data.user) == [1, 2, 1] and list(data.item) == ["a", "b", "b"]
    np.testing.assert_array_equal(data.rating, [5, 3.5, 4])
    tsv = _write(tmp_path / "r.tsv", "user\titem\trating\n7\t9\t1\n")
    assert read_interactions(tsv).item.tolist() == [9]
    pq = tmp_path / "r.parquet"
    pd.DataFrame({"user": ["u1", "u2"], "item": [3, 4], "rating": [5.0, 2.0]}).to_parquet(pq)
    data = read_interactions(pq)
    assert data.user.tolist() == ["u1", "u2"] and data.item.dtype == np.int64


def test_read_errors_name_the_file_and_the_line(tmp_path):
    bad = _write(tmp_path / "bad.csv", "user,item,rating\n1,2,5\n1,3,five\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 3: 'rating' is 'five'"):
        read_interactions(bad)
    missing_col = _write(tmp_path / "cols.csv", "u,i,r\n1,2,3\n")
    with pytest.raises(DataError, match=r"cols\.csv: no column 'user' \(columns: u, i, r\)"):
        read_interactions(missing_col)
    ragged = _write(tmp_path / "ragged.csv", "user,item,rating\n1,2,5\n1,3,4,9\n")
    with pytest.raises(DataError, match=r"ragged\.csv: malformed row: .*line 3"):
        read_interactions(ragged)
    short = _write(tmp_path / "short.csv", "user,item,rating\n1,2,5\n4,,3\n")
    with pytest.raises(DataError, match=r"short\.csv, line 3: missing 'item'"):
        read_interactions(short)
    with pytest.raises(DataError, match="does not exist"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="unknown interaction data"):
        load_interactions("nope")


def test_duplicates_policies(tmp_path):
    path = _write(tmp_path / "d.csv", "user,item,rating\n1,2,2\n1,3,4\n1,2,5\n1,2,1\n")
    assert read_interactions(path).rating.tolist() == [4, 1]  # last (default): the latest row of the pair wins
    assert read_interactions(path, duplicates="first").rating.tolist() == [2, 4]
    assert sorted(read_interactions(path, duplicates="max").rating.tolist()) == [4, 5]
    with pytest.raises(DataError, match=r"d\.csv, line 4: duplicate of the pair on line 2"):
        read_interactions(path, duplicates="error")
    with pytest.raises(ConfigError, match="unknown duplicates policy"):
        read_interactions(path, duplicates="sum")


def _toy(n_users=60, n_items=40, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items, ratings = [], [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=rng.integers(3, 20), replace=False)
        users += [1000 + u] * len(chosen)
        items += [f"m{i}" for i in chosen]
        ratings += rng.choice([1, 2, 3, 4, 5], size=len(chosen)).tolist()
    return Interactions(np.array(users), np.array(items), np.array(ratings, float))


def test_liang_split_follows_the_protocol():
    data = _toy()
    split = liang_split(data, heldout_users=8, seed=1)
    # Positives only, users with >= 5 positives.
    pos = data.rating > 3.5
    ids, counts = np.unique(data.user[pos], return_counts=True)
    kept = set(ids[counts >= 5].tolist())
    all_users = [*split.train_user_ids, *split.valid_user_ids, *split.test_user_ids]
    assert set(all_users) == kept and len(all_users) == len(kept)
    assert split.valid_in.shape[0] == split.test_in.shape[0] == 8
    # The item set is the training users' items.
    train_items = set(data.item[pos & np.isin(data.user, split.train_user_ids)].tolist())
    assert set(split.item_ids.tolist()) == train_items
    # Fold-in and target are disjoint, together the user's known positives; target = int(0.2 * n) when n >= 5.
    for fold_in, target, users in ((split.valid_in, split.valid_out, split.valid_user_ids), (split.test_in, split.test_out, split.test_user_ids)):
        assert fold_in.multiply(target).nnz == 0
        for row, user in enumerate(users):
            mine = set(data.item[pos & (data.user == user)].tolist()) & train_items
            got = {split.item_ids[c] for c in np.r_[fold_in[row].indices, target[row].indices]}
            assert got == mine
            n = len(mine)
            assert target[row].nnz == (int(0.2 * n) if n >= 5 else 0)
    assert set(np.unique(split.train.data)) == {1.0}
    assert isinstance(split.train, sp.csr_matrix)


def _liang_notebook_split(data: Interactions, heldout: int, seed: int = 98765) -> dict[str, sp.csr_matrix]:
    """Liang et al. (2018)'s preprocessing notebook (github.com/dawenl/vae_cf), transcribed in pandas:
    the reference the split must equal, matrix for matrix."""
    raw = pd.DataFrame({"userId": data.user, "movieId": data.item, "rating": data.rating})
    raw = raw[raw["rating"] > 3.5]
    counts = raw.groupby("userId").size()
    raw = raw[raw["userId"].isin(counts.index[counts >= 5])]
    unique_uid = raw.groupby("userId").size().index
    np.random.seed(seed)
    unique_uid = unique_uid[np.random.permutation(unique_uid.size)]
    n = unique_uid.size
    train_users, heldout_users = unique_uid[: n - 2 * heldout], (unique_uid[n - 2 * heldout : n - heldout], unique_uid[n - heldout :])
    train_plays = raw.loc[raw["userId"].isin(train_users)]
    unique_sid = pd.unique(train_plays["movieId"])
    show2id = {s: i for i, s in enumerate(unique_sid)}
    profile2id = {p: i for i, p in enumerate(unique_uid)}

    def split_train_test_proportion(plays, test_prop=0.2):  # the notebook's, users in groupby (sorted id) order
        fold_in, target = [], []
        np.random.seed(seed)
        for _, group in plays.groupby("userId"):
            n_items = len(group)
            if n_items >= 5:
                idx = np.zeros(n_items, dtype=bool)
                idx[np.random.choice(n_items, size=int(test_prop * n_items), replace=False).astype("int64")] = True
                fold_in.append(group[~idx])
                target.append(group[idx])
            else:
                fold_in.append(group)
        return pd.concat(fold_in), pd.concat(target)

    def matrix(plays, start, rows):
        r = np.array([profile2id[u] for u in plays["userId"]]) - start
        c = np.array([show2id[i] for i in plays["movieId"]])
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(rows, len(unique_sid)))

    out = {"train": matrix(train_plays, 0, len(train_users))}
    for name, users, start in (("valid", heldout_users[0], n - 2 * heldout), ("test", heldout_users[1], n - heldout)):
        plays = raw.loc[raw["userId"].isin(users)]
        fold_in, target = split_train_test_proportion(plays.loc[plays["movieId"].isin(unique_sid)])
        out[f"{name}_in"], out[f"{name}_out"] = matrix(fold_in, start, heldout), matrix(target, start, heldout)
    return out


@pytest.mark.parametrize("seed", [98765, 3])
def test_split_equals_liang_et_al_notebook_matrix_for_matrix(seed):
    """The same five matrices as the authors' code (the 80/20 draws go to users in sorted-id order, as its groupby)."""
    data = _toy(n_users=120, n_items=60, seed=5)
    split = liang_split(data, heldout_users=20, seed=seed)
    reference = _liang_notebook_split(data, 20, seed)
    for name, theirs in reference.items():
        ours = getattr(split, name)
        assert ours.shape == theirs.shape and (ours != theirs).nnz == 0, name


def test_split_is_deterministic_and_saved_byte_identically(tmp_path):
    data = _toy()
    a, b = liang_split(data, heldout_users=8, seed=3), liang_split(data, heldout_users=8, seed=3)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for name in ("train", "valid_in", "valid_out", "test_in", "test_out", "ids"):
        assert filecmp.cmp(tmp_path / "a" / f"{name}.npz", tmp_path / "b" / f"{name}.npz", shallow=False), name
    # Readable outside elbolab, and round-trips.
    assert (sp.load_npz(tmp_path / "a" / "train.npz") != a.train).nnz == 0
    back = InteractionSplit.load(tmp_path / "a")
    assert back.item_ids.tolist() == a.item_ids.tolist() and back.test_user_ids.tolist() == a.test_user_ids.tolist()
    other = liang_split(data, heldout_users=8, seed=4)
    assert other.test_user_ids.tolist() != a.test_user_ids.tolist()


def test_heldout_fraction_and_bad_counts():
    data = _toy()
    split = liang_split(data, heldout_users=0, heldout_fraction=0.1)
    n = split.train.shape[0] + 2 * split.valid_in.shape[0]
    assert split.valid_in.shape[0] == round(0.1 * n)
    with pytest.raises(ConfigError, match="cannot hold out"):
        liang_split(data, heldout_users=1000)
    with pytest.raises(DataError, match="no user has"):
        liang_split(data, min_user_count=10_000)


def test_synthetic_data_has_a_power_law_and_the_requested_shape():
    data = synthetic_interactions(2000, 500, 40_000, seed=1)
    assert len(data) > 0.8 * 40_000 and len(set(data.item.tolist())) == 500
    counts = np.sort(np.bincount(data.item, minlength=500))[::-1]
    assert counts[0] > 20 * np.median(counts)  # heavy head
    per_user = np.bincount(data.user)
    assert per_user.min() >= 5
    again = synthetic_interactions(2000, 500, 40_000, seed=1)
    assert np.array_equal(data.item, again.item)


def _zip_bytes(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def test_grouplens_specs_carry_the_published_md5():
    assert ML20M_ZIP.md5 == "cd245b17a1ae2cc31bb14903e1204af3" and ML20M_ZIP.size == 198_702_078
    assert ML1M_ZIP.md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert all(s.url.startswith("https://files.grouplens.org/") for s in (*ML1M_ZIP.sources, *ML20M_ZIP.sources))


def test_md5_verified_url_source_on_a_local_server(server, tmp_path, monkeypatch):  # noqa: F811
    payload = _zip_bytes({
        "ml-1m/ratings.dat": "1::10::5::978300760\n1::11::3::978302109\n2::10::4::978301968\n",
        "ml-1m/movies.dat": "10::Toy Story (1995)::Animation\n11::Jumanji (1995)::Adventure\n",
    })
    (server.root / "ml-1m.zip").write_bytes(payload)
    spec = VerifiedFile("ml-1m.zip", "", 0, (UrlSource(f"{server.url}/ml-1m.zip"),), md5=hashlib.md5(payload).hexdigest())
    path = fetch_file(spec, tmp_path / "raw", quiet=True)
    assert path.read_bytes() == payload and sources._matches_sidecar(path)
    # The ml-1m converter reads it, with titles.
    from elbolab.data import interactions

    monkeypatch.setitem(interactions.INTERACTION_SOURCES, "ml-1m", (spec, interactions._convert_ml1m))
    data = load_interactions("ml-1m", tmp_path)
    assert data.user.tolist() == [1, 1, 2] and data.titles[10] == "Toy Story (1995)"
    # A wrong md5 is a checksum error and leaves nothing behind.
    wrong = VerifiedFile("other.zip", "", 0, (UrlSource(f"{server.url}/ml-1m.zip"),), md5="0" * 32)
    with pytest.raises(ChecksumError, match="md5 0000"):
        fetch_file(wrong, tmp_path / "raw2", quiet=True)
    assert not (tmp_path / "raw2" / "other.zip").exists()


@pytest.mark.slow
def test_movielens_100k_from_the_carrier_wheel(tmp_path):
    data = load_interactions("ml-100k", tmp_path)
    assert len(data) == 100_000 and len(set(data.user.tolist())) == 943 and len(set(data.item.tolist())) == 1682
    assert data.titles[1] == "Toy Story"
    split = liang_split(data, heldout_users=100)
    c = split.counts()
    assert c["train_users"] + 200 == 938 and c["items"] == split.item_titles.shape[0]
