"""Collaborative filtering (issue 3): the recommendation task, an implicit-shaped recommender, ``elbolab recommend``.

The task trains on the training users' click vectors (Liang et al. 2018's
strong generalisation: held-out users are never trained on), keeps the epoch
with the best validation NDCG@100 (``best.pt``), and reports NDCG@100,
Recall@20 and Recall@50 on the test users. The condition c of every batch is
the user's clean history x (RecVAE's prior reads it; the others ignore it).
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from . import distributed
from .bounds import BoundTerms
from .config import Config
from .corruption import check_corruption, corrupt
from .data.interactions import InteractionSplit, liang_split, load_interactions
from .errors import ConfigError, DataError
from .models import LatentVariableModel, build_from_config
from .ranking import rank_users, summarize
from .sparse import row_sums, to_torch_csr

Batch = tuple[torch.Tensor, torch.Tensor | None]
SPLIT_DIR = "split"  # inside a run directory: the five matrices and ids.npz


def load_split(config: Config) -> InteractionSplit:
    """The interaction split the config's ``[data]`` section describes (same config, same split)."""
    d = config.data
    data = load_interactions(
        d.name, d.data_dir or None, user_col=d.user_col, item_col=d.item_col, rating_col=d.rating_col,
        timestamp_col=d.timestamp_col, sep=d.sep, duplicates=d.duplicates,
    )
    return liang_split(
        data, min_rating=d.min_rating, min_user_count=d.min_user_count, min_item_count=d.min_item_count,
        heldout_users=d.heldout_users, heldout_fraction=d.heldout_fraction, target_fraction=d.target_fraction,
        seed=d.split_seed,
    )


@torch.inference_mode()
def item_scores(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor:
    """Decoder logits at the posterior mean for click rows x [B, I] (Liang et al. 2018, sec. 2.4: rank by them)."""
    q = model.posterior(x, x)
    return model.likelihood(q.mean, x).logits  # [B, I]


def model_scorer(model: LatentVariableModel, device: torch.device):
    """scipy rows -> item scores, in eval mode."""
    def score(rows: sp.csr_matrix) -> torch.Tensor:
        return item_scores(model, to_torch_csr(rows, device))

    return score


class RecommendationTask:
    """Click vectors of training users; validation and test users by fold-in (Liang et al. 2018, sec. 4)."""

    selection_metric: str | None = "valid_ndcg@100"

    def __init__(self, config: Config, device: torch.device | str = "cpu", split: InteractionSplit | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        check_corruption(config.bound.corruption, config.bound.corruption_level)
        self.split = split if split is not None else load_split(config)
        if self.split.train.shape[0] == 0 or self.split.n_items == 0:
            raise DataError(f"data {config.data.name!r} leaves no training users or items after preprocessing")

    @property
    def data_dim(self) -> int:
        return self.split.n_items

    def build_model(self) -> LatentVariableModel:
        x_mean = torch.from_numpy(np.asarray(self.split.train.mean(axis=0)).ravel()).float()  # [n_items]
        return build_from_config(self.config.model, self.data_dim, x_mean=x_mean).to(self.device)

    def write_artifacts(self, run: Path) -> None:
        """Keep the split (CSR .npz matrices and id maps) in the run, so any metric can be recomputed outside."""
        self.split.save(Path(run) / SPLIT_DIR)

    # ------------------------------------------------------------------ the update plan (trainer hook)

    def optimizers(self, model: LatentVariableModel) -> dict[str, torch.optim.Optimizer]:
        from .train import make_optimizer  # train imports the tasks, which import this module

        parts = _alternating_parts(model) if getattr(model, "alternating_updates", False) else {"all": model}
        optimizers = {name: make_optimizer(part, self.config) for name, part in parts.items()}
        for opt in optimizers.values():
            opt.register_load_state_dict_post_hook(_transpose_layer_state)
        return optimizers

    def update_plan(self, model: LatentVariableModel) -> list:
        from .train import Phase

        if getattr(model, "alternating_updates", False):  # RecVAE (Shenbin et al. 2020, sec. 3.4)
            t = self.config.train
            if t.encoder_passes < 1 or t.decoder_passes < 1:
                raise ConfigError("train.encoder_passes and train.decoder_passes must be >= 1")
            return [Phase("encoder", "encoder", t.encoder_passes), Phase("decoder", "decoder", t.decoder_passes)]
        return [Phase()]

    def end_phase(self, model: LatentVariableModel, phase) -> None:
        if phase.name == "encoder" and hasattr(model, "refresh_prior"):
            model.refresh_prior()  # q_old <- q before the decoder pass, as in RecVAE's code

    # ------------------------------------------------------------------ training

    def num_batches(self) -> int:
        return -(-self.split.train.shape[0] // self.config.train.batch_size)

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        size = self.config.train.batch_size
        order = torch.randperm(self.split.train.shape[0], generator=generator).numpy()
        for start in range(0, len(order), size):
            x = to_torch_csr(self.split.train[order[start : start + size]], self.device)
            yield x, x

    def loss(self, model: LatentVariableModel, batch: Batch, step: int, phase=None) -> BoundTerms:
        """The configured bound with input dropout (off in RecVAE's decoder phase); with gamma > 0 RecVAE's KL weight."""
        from .tasks import OBJECTIVES

        cfg = self.config.bound
        if cfg.name not in OBJECTIVES:
            raise ConfigError(f"unknown bound {cfg.name!r}; choose one of {', '.join(OBJECTIVES)}")
        x, c = batch
        noisy = cfg.corruption != "none" and (phase is None or phase.name != "decoder")
        x_in = corrupt(x, cfg.corruption, cfg.corruption_level) if noisy else None
        with _frozen_outside(model, phase):
            terms = OBJECTIVES[cfg.name](model, x, c, cfg, step, x_in=x_in)
        if cfg.gamma > 0:
            # RecVAE (Shenbin et al. 2020, sec. 3.3): KL weight beta'(x_u) = gamma * |x_u|.
            weight = cfg.gamma * row_sums(x)  # [B]
            value = terms.reconstruction - weight * terms.kl
            terms = BoundTerms(value, terms.reconstruction, terms.kl, terms.log_weights, cfg.gamma, terms.k)
        return terms

    def validate(self, model: LatentVariableModel) -> dict[str, float]:
        s = self.split
        if s.valid_in.shape[0] == 0:
            return {}
        return {f"valid_{k}": v["mean"] for k, v in self._ranking(model, s.valid_in, s.valid_out).items() if isinstance(v, dict)}

    def _ranking(self, model: LatentVariableModel, fold_in, target, n: int = 0) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        total = min(n, fold_in.shape[0]) if n > 0 else fold_in.shape[0]
        lo, hi = distributed.shard_range(total)  # under torchrun each rank ranks a contiguous slice of the users
        per_user, skipped = rank_users(model_scorer(model, self.device), fold_in[lo:hi], target[lo:hi],
                                       batch_size=self.config.eval.batch_size)
        model.train(was_training)
        return summarize(distributed.gather_rows(per_user), sum(distributed.all_gather(skipped)))

    # ------------------------------------------------------------------ test

    def test_batches(self, batch_size: int, n: int = 0) -> Iterator[Batch]:
        """Test users' fold-in rows (the bound is dissected on what the encoder sees)."""
        rows = self.split.test_in[: self.num_test_examples(n)]
        for start in range(0, rows.shape[0], batch_size):
            x = to_torch_csr(rows[start : start + batch_size], self.device)
            yield x, x

    def num_test_examples(self, n: int = 0) -> int:
        total = self.split.test_in.shape[0]
        return min(n, total) if n > 0 else total

    def test_metrics(self, model: LatentVariableModel, n: int = 0) -> dict[str, Any]:
        """NDCG@100, Recall@20, Recall@50 ({mean, se} over test users), users evaluated and skipped."""
        s = self.split
        return self._ranking(model, s.test_in, s.test_out, n)


def _alternating_parts(model: LatentVariableModel) -> dict[str, torch.nn.Module]:
    """The parts an alternating model's phases update, one optimizer each (RecVAE: encoder, decoder)."""
    return {"encoder": model.encoder, "decoder": model.decoder}


def _transpose_layer_state(optimizer: torch.optim.Optimizer) -> None:
    """Adam moments saved for an ``nn.Linear`` first layer ([out, in]) fit its ``SparseLinear`` ([in, out]) transposed.

    Checkpoints written before the first layer became a ``SparseLinear`` then
    resume exactly (the weights themselves are transposed by its load hook).
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.dim() == 2 and value.shape != p.shape and value.t().shape == p.shape:
                    state[key] = value.t().contiguous()


@contextlib.contextmanager
def _frozen_outside(model: LatentVariableModel, phase):
    """While the loss's graph is built, the parts the phase does not step need no parameter gradients.

    RecVAE's decoder phase then skips the encoder's backward and its encoder
    phase the decoder's weight gradient (a [I, 200] matmul). Their optimizers
    do not step in that phase, so the updates are the same; only wasted work goes.
    """
    if phase is None or not getattr(model, "alternating_updates", False):
        yield
        return
    others = [p for name, part in _alternating_parts(model).items() if name != phase.optimizer for p in part.parameters()]
    flags = [p.requires_grad for p in others]
    for p in others:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(others, flags):
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- using a trained model


class Recommender:
    """A trained family member in the shape of ``implicit``'s recommenders.

    ``fit(user_items)`` trains on a users x items CSR matrix;
    ``recommend(user_items, N)`` ranks items for users given as CSR rows
    (a batch) or as one user's item indices, by fold-in: encode the history,
    decode, rank. New users need no retraining.
    """

    def __init__(self, config: Config | str = "mult-vae-ml100k", device: str = "cpu", model: LatentVariableModel | None = None) -> None:
        from .config import load_preset

        self.config = load_preset(config) if isinstance(config, str) else config
        self.device = torch.device(device)
        self.model = model
        self.item_ids: np.ndarray | None = None
        self.item_titles: np.ndarray | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> "Recommender":
        """The model of a trained run (its best epoch) with the run's item ids and titles."""
        from .runs import load, read_config

        run = Path(run_dir)
        rec = cls(read_config(run), device, load(run, device=device))
        with np.load(run / SPLIT_DIR / "ids.npz", allow_pickle=False) as ids:
            rec.item_ids, rec.item_titles = ids["item_ids"], ids["item_titles"]
        return rec

    def fit(self, user_items: sp.csr_matrix, *, progress: bool = False) -> "Recommender":
        """Train the configured model on every row of ``user_items`` (no held-out users, the last epoch is kept)."""
        from .train import fit as fit_epochs

        user_items = sp.csr_matrix(user_items, dtype=np.float32)
        empty = sp.csr_matrix((0, user_items.shape[1]), dtype=np.float32)
        ids = np.arange(user_items.shape[1])
        split = InteractionSplit(user_items, empty, empty, empty, empty, ids, np.arange(user_items.shape[0]),
                                 np.zeros(0, np.int64), np.zeros(0, np.int64), np.full(len(ids), "", dtype=str))
        torch.manual_seed(self.config.train.seed)
        generator = torch.Generator().manual_seed(self.config.train.seed)
        task = RecommendationTask(self.config, self.device, split=split)
        task.selection_metric = None
        model = task.build_model()
        with tempfile.TemporaryDirectory(prefix="elbolab-fit-") as tmp:
            fit_epochs(model, task, task.optimizers(model), Path(tmp), generator, {"epoch": 0, "step": 0, "best": None},
                       progress=progress)
        self.model = model.eval()
        self.item_ids, self.item_titles = ids, split.item_titles
        return self

    @torch.inference_mode()
    def recommend(self, user_items, N: int = 10, filter_already_liked_items: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-N item column indices and their scores: [B, N] for CSR rows, [N] for one user's item indices."""
        if self.model is None:
            raise ConfigError("this Recommender has no model yet; call fit(user_items) or use Recommender.from_run(run)")
        single = not sp.issparse(user_items)
        n_items = self.model.data_dim
        if single:
            items = np.asarray(user_items, dtype=np.int64).ravel()
            if items.size and (items.min() < 0 or items.max() >= n_items):
                raise DataError(f"item indices must be in [0, {n_items}), got {items.min()}..{items.max()}")
            user_items = sp.csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), int), items)), shape=(1, n_items))
        rows = sp.csr_matrix(user_items, dtype=np.float32)
        if rows.shape[1] != n_items:
            raise DataError(f"user_items has {rows.shape[1]} item columns, the model was trained on {n_items}")
        empty = np.flatnonzero(np.diff(rows.indptr) == 0)
        if len(empty):
            raise DataError(f"user row {empty[0]} has no items; fold-in needs at least one item of history")
        rows.data[:] = 1.0
        scores = model_scorer(self.model, self.device)(rows).float()
        if filter_already_liked_items:
            from .ranking import exclude_fold_in

            scores = exclude_fold_in(scores, rows)
        top = torch.topk(scores, min(N, n_items), dim=-1)
        ids, values = top.indices.cpu().numpy(), top.values.cpu().numpy()
        return (ids[0], values[0]) if single else (ids, values)


def recommend(run_dir: str | Path, items: Sequence[str], n: int = 10, device: str = "cpu") -> dict[str, Any]:
    """Top-n items for a new user who clicked ``items`` (original ids), from a trained run.

    Returns {"recommendations": [(original id, title, score)], "unknown": [ids not in the run's item set]}.
    Unknown ids are skipped; a history with no known item is an error.
    """
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    rec = Recommender.from_run(run_dir, device)
    column = {str(i): c for c, i in enumerate(rec.item_ids)}
    known = [column[str(i).strip()] for i in items if str(i).strip() in column]
    unknown = [str(i).strip() for i in items if str(i).strip() not in column]
    if not known:
        given = ", ".join(unknown) if unknown else "none"
        raise DataError(f"no known item in the history (given: {given}); pass ids from the run's data, e.g. --items {rec.item_ids[0]}")
    ids, scores = rec.recommend(np.array(sorted(set(known))), N=n)
    rows = [(str(rec.item_ids[i]), str(rec.item_titles[i]), float(s)) for i, s in zip(ids, scores)]
    return {"recommendations": rows, "unknown": unknown, "history": [str(rec.item_ids[c]) for c in known]}
