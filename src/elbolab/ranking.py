"""Ranking metrics for held-out users (Liang et al. 2018, sec. 4.2), batched so memory stays bounded.

For a user u with target set T_u (n_u = |T_u|) and the items ranked by score
with the fold-in items excluded, w(r) the item at rank r (1-based):

    Recall@k = sum_{r<=k} 1[w(r) in T_u] / min(k, n_u)
    DCG@k    = sum_{r<=k} 1[w(r) in T_u] / log2(r + 1)
    NDCG@k   = DCG@k / sum_{r<=min(n_u, k)} 1 / log2(r + 1)

Users without target items are skipped (and counted). Scores are computed
``batch_size`` users at a time, so 10,000 users x 20,000 items never sit in
memory at once: the peak is batch_size x n_items floats.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .errors import ConfigError

DEFAULT_KS = {"ndcg": (100,), "recall": (20, 50)}


def exclude_fold_in(scores: torch.Tensor, fold_in: sp.csr_matrix) -> torch.Tensor:
    """``scores`` [B, I] with the fold-in items of each row set to -inf (in place), so they are never recommended."""
    rows = np.repeat(np.arange(fold_in.shape[0]), np.diff(fold_in.indptr))
    r = torch.from_numpy(rows).to(scores.device)
    c = torch.from_numpy(fold_in.indices.astype(np.int64)).to(scores.device)
    scores[r, c] = -torch.inf
    return scores


def top_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the k highest scores per row, best first [B, k]."""
    k = min(k, scores.shape[-1])
    return torch.topk(scores, k, dim=-1, sorted=True).indices


def hits_at(top: torch.Tensor, target: sp.csr_matrix) -> torch.Tensor:
    """hits[u, r] = 1 when the item at rank r of user u is one of u's targets [B, k] (bool)."""
    dense_rows = torch.zeros(target.shape, dtype=torch.bool, device=top.device)  # [B, I]: one batch only
    rows = np.repeat(np.arange(target.shape[0]), np.diff(target.indptr))
    dense_rows[torch.from_numpy(rows).to(top.device), torch.from_numpy(target.indices.astype(np.int64)).to(top.device)] = True
    return dense_rows.gather(1, top)


def ndcg_at_k(hits: torch.Tensor, n_target: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k per user [B] from the hit matrix of the top ranks (binary relevance)."""
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=hits.device, dtype=torch.float64))  # [k]
    dcg = (hits[:, :k].double() * discount[: hits[:, :k].shape[1]]).sum(-1)
    ideal_cumulative = torch.cat([discount.new_zeros(1), discount.cumsum(0)])  # [k + 1]
    idcg = ideal_cumulative[n_target.clamp(max=k)]
    return dcg / idcg


def recall_at_k(hits: torch.Tensor, n_target: torch.Tensor, k: int) -> torch.Tensor:
    """Recall@k per user [B]: hits in the top k over min(k, n_target) (Liang et al. 2018, eq. 9)."""
    return hits[:, :k].double().sum(-1) / n_target.clamp(max=k).double()


def metric_names(ndcg_ks: Sequence[int] = (100,), recall_ks: Sequence[int] = (20, 50)) -> list[str]:
    """The metric keys, e.g. ``ndcg@100``, ``recall@20``."""
    return [f"ndcg@{k}" for k in ndcg_ks] + [f"recall@{k}" for k in recall_ks]


@torch.inference_mode()
def rank_users(
    score: Callable[[sp.csr_matrix], torch.Tensor],
    fold_in: sp.csr_matrix,
    target: sp.csr_matrix,
    *,
    ndcg_ks: Sequence[int] = (100,),
    recall_ks: Sequence[int] = (20, 50),
    batch_size: int = 1000,
    n_users: int = 0,
) -> tuple[dict[str, torch.Tensor], int]:
    """Per-user ranking metrics of ``score`` (fold-in rows -> item scores [B, I]) against ``target``.

    Returns ({name: values [n_evaluated]}, number of users skipped for having
    no target items). ``n_users > 0`` evaluates only the first n users.
    """
    if fold_in.shape != target.shape:
        raise ConfigError(f"fold-in {fold_in.shape} and target {target.shape} matrices differ in shape")
    if batch_size < 1:
        raise ConfigError(f"ranking batch_size must be >= 1, got {batch_size}")
    total = min(n_users, fold_in.shape[0]) if n_users > 0 else fold_in.shape[0]
    k_max = max([*ndcg_ks, *recall_ks])
    names = metric_names(ndcg_ks, recall_ks)
    values: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    n_target_all = np.diff(target.indptr)[:total]
    skipped = int((n_target_all == 0).sum())
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        keep = np.flatnonzero(n_target_all[start:stop] > 0) + start
        if len(keep) == 0:
            continue
        x_in, x_out = fold_in[keep], target[keep]
        scores = exclude_fold_in(score(x_in).float(), x_in)  # [B, I]
        top = top_items(scores, k_max)  # [B, k_max]
        hits = hits_at(top, x_out)
        n_target = torch.from_numpy(np.diff(x_out.indptr)).to(top.device)
        for k in ndcg_ks:
            values[f"ndcg@{k}"].append(ndcg_at_k(hits, n_target, k).cpu())
        for k in recall_ks:
            values[f"recall@{k}"].append(recall_at_k(hits, n_target, k).cpu())
    return {name: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for name, v in values.items()}, skipped


def summarize(per_user: dict[str, torch.Tensor], skipped: int) -> dict:
    """{name: {mean, se}} over evaluated users, plus ``users`` and ``skipped_users`` counts (eval.json's task_metrics)."""
    from .evaluate import mean_and_se  # evaluate imports the tasks, which import this module

    out: dict = {name: mean_and_se(v) for name, v in per_user.items()}
    out["users"] = int(next(iter(per_user.values())).numel()) if per_user else 0
    out["skipped_users"] = skipped
    return out


# --------------------------------------------------------------------------- baselines


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Item click counts over the training users [I]: the popularity baseline scores every user alike."""
    return np.asarray(train.sum(axis=0)).ravel().astype(np.float32)


def ease_weights(train: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's item-item weights B (Steck 2019, eq. 8): P = (X^T X + l2 I)^-1, B = I - P / diag(P), diag(B) = 0.

    Dense [I, I]: fine for thousands of items (ML-100K), ~1.6 GB in float32 for ML-20M's 20,108.
    """
    if l2 <= 0:
        raise ConfigError(f"EASE's L2 weight must be > 0, got {l2}")
    gram = (train.T @ train).toarray().astype(np.float64)  # [I, I]
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)
