"""Sparse user-item rows as torch CSR tensors (collaborative filtering, issue 3).

A batch of 500 ML-20M users is 500 x 20,108 entries of which ~1% are
non-zero. Kept sparse, the encoder's first layer is a sparse-dense matmul
(``nn.Linear`` accepts a CSR input) and the multinomial log-likelihood reads
only the clicked items; nothing here ever densifies a row. Every function
also accepts a dense tensor, so the same model code serves both.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

# torch flags its CSR support as beta on first use; the operations used here are covered by tests.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def is_sparse(x: torch.Tensor) -> bool:
    """True for a torch sparse CSR tensor."""
    return x.layout == torch.sparse_csr


def to_torch_csr(rows: sp.csr_matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A scipy CSR matrix as a float32 torch CSR tensor on ``device`` (no dense copy)."""
    rows = sp.csr_matrix(rows)
    return torch.sparse_csr_tensor(
        torch.from_numpy(rows.indptr.astype(np.int64)),
        torch.from_numpy(rows.indices.astype(np.int64)),
        torch.from_numpy(rows.data.astype(np.float32)),
        size=rows.shape,
        check_invariants=False,  # built from a valid scipy CSR
    ).to(device)


def row_ids(x: torch.Tensor) -> torch.Tensor:
    """The row of each stored value of a CSR tensor [nnz]."""
    crow = x.crow_indices()
    return torch.repeat_interleave(torch.arange(x.shape[0], device=x.device), crow[1:] - crow[:-1])


def with_values(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The CSR tensor ``x`` with its stored values replaced (same sparsity pattern)."""
    return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape, check_invariants=False)


def row_sums(x: torch.Tensor) -> torch.Tensor:
    """Sum of each row [B] (|x_u| for click vectors)."""
    if not is_sparse(x):
        return x.sum(-1)
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, row_ids(x), x.values())


def l2_normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x_u / ||x_u||_2 per row (Liang et al. 2018, sec. 2.3: the encoder sees normalised clicks); empty rows stay 0."""
    if not is_sparse(x):
        return torch.nn.functional.normalize(x, dim=-1, eps=eps)
    rows = row_ids(x)
    norms = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device).index_add_(0, rows, x.values().square())
    return with_values(x, x.values() / norms.sqrt().clamp_min(eps)[rows])


def dropout_values(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout on the stored values of a CSR tensor; dropped entries become explicit zeros."""
    keep = torch.rand(x.values().shape, generator=generator, device=x.device) >= level
    return with_values(x, x.values() * keep.to(x.dtype) / (1.0 - level))


def multinomial_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Mult(x; n, softmax(logits)) for a CSR x [B, I] and logits [..., B, I], reading only x's non-zeros."""
    log_pi = torch.log_softmax(logits, dim=-1)  # [..., B, I]
    rows, cols, values = row_ids(x), x.col_indices(), x.values()
    picked = log_pi[..., rows, cols] * values  # [..., nnz]
    out = torch.zeros(*log_pi.shape[:-1], dtype=log_pi.dtype, device=log_pi.device)  # [..., B]
    out = out.index_add(-1, rows, picked)
    n = row_sums(x)
    log_factorials = torch.zeros_like(n).index_add_(0, rows, torch.lgamma(values + 1))
    return out + torch.lgamma(n + 1) - log_factorials
