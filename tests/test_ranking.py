"""Ranking metrics (issue 3) against hand-computed cases, fold-in exclusion, skipped users, batching, baselines."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from elbolab.errors import ConfigError
from elbolab.ranking import ease_weights, ndcg_at_k, popularity_scores, rank_users, recall_at_k, summarize


def test_ndcg_and_recall_by_hand():
    # ranks 1..4 hit, miss, hit, miss; 3 targets in all.
    hits = torch.tensor([[True, False, True, False]])
    n = torch.tensor([3])
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    assert ndcg_at_k(hits, n, 4).item() == pytest.approx(dcg / (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)))
    # k = 2: ideal DCG over min(3, 2) = 2 ranks; recall over min(2, 3) = 2.
    assert ndcg_at_k(hits, n, 2).item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert recall_at_k(hits, n, 2).item() == pytest.approx(0.5)
    assert recall_at_k(hits, n, 4).item() == pytest.approx(2 / 3)
    # one target, found at rank 1: perfect at any k.
    assert ndcg_at_k(torch.tensor([[True, False]]), torch.tensor([1]), 2).item() == pytest.approx(1.0)


def test_rank_users_excludes_fold_in_skips_users_without_targets_and_batches():
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    fold_in = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]], np.float32))
    target = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], np.float32))

    by_history = {(0,): scores[0], (4,): scores[1]}  # users 0 and 1; user 2 has no target and is never scored

    def score(rows):
        return torch.stack([by_history[tuple(rows[i].indices.tolist())] for i in range(rows.shape[0])])

    per_user, skipped = rank_users(score, fold_in, target, ndcg_ks=(1,), recall_ks=(1,), batch_size=1)
    assert skipped == 1 and per_user["ndcg@1"].numel() == 2
    # user 0: item 0 is fold-in, so item 1 ranks first and is the target; user 1: item 4 excluded, item 3 first.
    assert per_user["recall@1"].tolist() == [1.0, 1.0]
    out = summarize(per_user, skipped)
    assert out["ndcg@1"]["mean"] == 1.0 and out["skipped_users"] == 1 and out["users"] == 2


def test_batch_size_does_not_change_the_metrics():
    rng = np.random.default_rng(0)
    fold_in = sp.random(50, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    target = sp.random(50, 30, density=0.1, format="csr", random_state=2, dtype=np.float32)
    target = target - target.multiply(fold_in > 0)
    target.eliminate_zeros()
    table = torch.from_numpy(rng.normal(size=30).astype(np.float32))

    def score(rows):
        return table.expand(rows.shape[0], -1).clone() + torch.from_numpy(rows.toarray())

    a, sa = rank_users(score, fold_in, target, batch_size=7)
    b, sb = rank_users(score, fold_in, target, batch_size=1000)
    assert sa == sb
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    with pytest.raises(ConfigError):
        rank_users(score, fold_in, target[:10])


def test_popularity_and_ease_baselines():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0]], np.float32))
    assert popularity_scores(x).tolist() == [3, 2, 1]
    b = ease_weights(x, l2=1.0)
    assert np.allclose(np.diag(b), 0)
    gram = (x.T @ x).toarray() + np.eye(3)
    # B solves min ||X - XB||^2 + l2 ||B||^2 s.t. diag(B) = 0: off-diagonal stationarity (Steck 2019, eq. 6).
    residual = gram @ b - (x.T @ x).toarray()
    off = ~np.eye(3, dtype=bool)
    assert np.allclose(residual[off], 0, atol=1e-5)
    with pytest.raises(ConfigError):
        ease_weights(x, 0.0)
