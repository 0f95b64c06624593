"""The training loop: optimizer, progress bar, per-epoch metrics, atomic
checkpoints and exact resume. It knows nothing about VAEs: a task gives it
batches and a loss (``tasks.py``)."""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from . import __version__
from . import distributed
from .compiled import AUTO_MIN_UPDATES, compiled, should_compile
from .config import Config, to_dict
from .bounds import BoundTerms
from .errors import ConfigError, RunError, TrainingError
from .floats import flush_denormals
from .models import LatentVariableModel
from .runs import (
    BEST,
    CHECKPOINT,
    append_metrics,
    atomic_write,
    load_checkpoint,
    make_run_dir,
    read_config,
    save_checkpoint,
    truncate_metrics,
    write_config,
)
from .schedules import lr_schedule
from .tasks import Task, make_task, resolve_device

# Fields a resumed run may change: how long it trains and where it runs.
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device")}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Phase:
    """One step of an epoch's update plan: ``passes`` passes over the batches, each update stepping ``optimizer``.

    The default plan is one phase over all parameters. A task may give its own
    (``task.update_plan(model)``, with ``task.optimizers(model)`` naming the
    optimizers); then ``task.loss`` receives the phase, and ``task.end_phase``
    (if defined) runs after it (RecVAE: 3 encoder passes, refresh the prior,
    1 decoder pass; Shenbin et al. 2020, sec. 3.4).
    """

    name: str = "all"
    optimizer: str = "all"
    passes: int = 1


Optimizers = dict[str, torch.optim.Optimizer]


def make_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """Adam with the config's settings (Kingma & Ba 2015; the IWAE paper's eps = 1e-4).

    The fused kernel updates all parameters in one pass: measured 6.3 -> 4.6 ms
    per step for the MNIST VAE at batch 100 on 2 CPU cores (benchmarks/speed.py).
    """
    cfg = config.train
    params = list(model.parameters())
    groups: list[dict[str, Any]] = [{"params": params}]
    if cfg.weight_decay > 0:  # decay the weight matrices, not biases or norm gains (Liang et al. 2018's Mult-DAE: W only)
        matrices, others = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
        groups = [g for g in ({"params": matrices}, {"params": others, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.Adam(
        groups,
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        fused=True,
    )


def train(config: Config | None, out: str | Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Train ``config`` into the run directory ``out`` and return its path.

    With ``resume``, continue the run in ``out`` from its last checkpoint
    (its own config.toml is authoritative; ``config`` may only change the
    number of epochs and the device). The same seed gives the same numbers
    whether or not the run was interrupted.
    """
    run = Path(out)
    if resume:
        config = _resumed_config(run, config)
    elif config is None:
        raise RunError("train needs a config (or resume=True for an existing run)")
    elif (run / CHECKPOINT).exists():
        raise RunError(f"{run} already holds a trained run; continue it with --resume or choose another --out")
    flush_denormals()  # subnormal gradients and weights made CPU matmuls 4x slower (floats.py)
    device = distributed.init(resolve_device(config.train.device))  # joins torchrun's process group, if any
    check_precision(config.train.precision, device)

    torch.manual_seed(config.train.seed)
    generator = torch.Generator().manual_seed(config.train.seed)  # data order and binarization: the same on every rank
    task = make_task(config, device)  # missing or bad data fails here, before a run directory exists
    model = task.build_model()
    if distributed.active():  # each rank draws its own sampling noise (the weights come from rank 0 via DDP)
        torch.manual_seed(_rank_seed(config.train.seed, distributed.rank()))
    optimizer = task.optimizers(model) if hasattr(task, "optimizers") else make_optimizer(model, config)
    if distributed.is_main() and not resume:  # a resumed run's config.toml is rewritten once its checkpoint is read
        make_run_dir(run)
        write_config(run, config)
    distributed.barrier()  # the run directory exists before any rank reads or writes in it
    if hasattr(task, "write_artifacts") and distributed.is_main():  # e.g. the recommendation task's split and id maps
        task.write_artifacts(run)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best": None}
    if resume:
        state = _restore(run, model, optimizer, generator, device)
        if config.train.epochs < state["epoch"]:
            raise RunError(f"{run} is already at epoch {state['epoch']}; ask for more with --epochs N (N > {state['epoch']})")
        if distributed.is_main():
            write_config(run, config)  # the new epoch budget (and device)
            truncate_metrics(run, state["epoch"])
    fit(model, task, optimizer, run, generator, state, progress=progress)
    return run


def check_precision(precision: str, device: torch.device) -> None:
    """``fp32``, or ``bf16`` autocast on a CUDA GPU that supports it; anything else is an error, never a fallback."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        raise ConfigError(
            f"--precision bf16 needs a CUDA GPU with bfloat16 support, and this run's device is {device}; "
            "use --precision fp32 (the default) here"
        )


def _rank_seed(seed: int, rank: int) -> int:
    """Rank r's seed for the torch RNG: rank 0 keeps the run's seed."""
    return seed + 1_000_003 * rank


def _resumed_config(run: Path, requested: Config | None) -> Config:
    stored = read_config(run)
    if not (run / CHECKPOINT).exists():
        raise RunError(f"{run} has no checkpoint to resume from; start it without --resume")
    if requested is None:
        return stored
    old, new = to_dict(stored), to_dict(requested)
    for section in old:
        if not isinstance(old[section], dict):
            continue
        for key in old[section]:
            if old[section][key] != new[section][key] and (section, key) not in RESUMABLE_CHANGES:
                raise RunError(
                    f"cannot change {section}.{key} of an existing run ({old[section][key]!r} -> "
                    f"{new[section][key]!r}); only train.epochs and train.device may change on --resume"
                )
    stored.train.epochs, stored.train.device = requested.train.epochs, requested.train.device
    return stored


def _restore(
    run: Path, model: LatentVariableModel, optimizer: torch.optim.Optimizer, generator: torch.Generator, device
) -> dict[str, Any]:
    checkpoint = load_checkpoint(run, map_location=device)
    missing = sorted({"optimizer", "epoch", "step", "rng"} - checkpoint.keys())
    if missing:
        raise RunError(f"{run / CHECKPOINT} holds no training state ({', '.join(missing)} missing); it cannot be resumed")
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:  # e.g. config.toml edited after training: other layer sizes
        lines = str(err).splitlines()  # torch's first line is a header, the second names a mismatch
        first = lines[1].strip() if len(lines) > 1 else str(err)
        raise RunError(f"{run / CHECKPOINT} does not fit the model of {run / 'config.toml'} ({first}); "
                       "was config.toml changed? restore it, or start a new run") from None
    try:
        if isinstance(optimizer, dict):
            for name, opt in optimizer.items():
                opt.load_state_dict(checkpoint["optimizer"][name])
        else:
            optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError as err:  # e.g. a run with weight decay from before decay skipped the biases (one group, now two)
        raise RunError(
            f"{run / CHECKPOINT} holds an optimizer state of another layout ({err}); it was written by an older "
            f"elbolab (version {checkpoint.get('elbolab_version', '?')}): continue it with that version, or start a new run"
        ) from None
    torch.set_rng_state(_own_rng_state(checkpoint))
    generator.set_state(checkpoint["rng"]["data"].cpu())
    if torch.device(device).type == "cuda" and checkpoint["rng"].get("cuda"):
        torch.cuda.set_rng_state_all([s.cpu() for s in checkpoint["rng"]["cuda"]])
    state = {"epoch": checkpoint["epoch"], "step": checkpoint["step"], "best": checkpoint.get("best")}
    if "compiled" in checkpoint:  # what train.compile = "auto" decided when the run started (older runs: their bool)
        state["compiled"] = checkpoint["compiled"]
    return state


def _own_rng_state(checkpoint: dict[str, Any]) -> torch.Tensor:
    """This rank's torch RNG state from a checkpoint; a rank the checkpoint has no state for (more ranks than when it was written) starts a fresh stream."""
    per_rank = checkpoint["rng"].get("torch_ranks") or [checkpoint["rng"]["torch"]]
    r = distributed.rank()
    if r < len(per_rank):
        return per_rank[r].cpu()
    return torch.Generator().manual_seed(_rank_seed(checkpoint["epoch"], r)).get_state()


def _checkpoint(model, optimizer, generator, state, device) -> dict[str, Any]:
    """The training state; every rank calls it (it gathers each rank's RNG state), rank 0 saves it."""
    rng = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if distributed.active():
        rng["torch_ranks"] = distributed.all_gather(rng["torch"])
    if torch.device(device).type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "elbolab_version": __version__,
        "model_spec": model.spec,
        "model": model.state_dict(),
        "optimizer": {n: o.state_dict() for n, o in optimizer.items()} if isinstance(optimizer, dict) else optimizer.state_dict(),
        "epoch": state["epoch"],
        "step": state["step"],
        "best": state["best"],
        "compiled": state["compiled"],
        "rng": rng,
    }


def fit(
    model: LatentVariableModel,
    task: Task,
    optimizer: torch.optim.Optimizer | Optimizers,
    run: Path,
    generator: torch.Generator,
    state: dict[str, Any],
    *,
    progress: bool = True,
) -> None:
    """Run epochs ``state['epoch'] .. train.epochs - 1``; after each, append metrics and checkpoint.

    A non-finite loss stops training before the step is taken, so the last
    checkpoint on disk (written only after finite epochs) stays good. An
    epoch follows the task's update plan (see :class:`Phase`) when it has one.
    """
    cfg = task.config.train
    schedule = lr_schedule(cfg.lr_schedule)
    device = next(model.parameters()).device
    optimizers: Optimizers = optimizer if isinstance(optimizer, dict) else {"all": optimizer}
    planned = hasattr(task, "update_plan")
    plan: list[Phase] = task.update_plan(model) if planned else [Phase()]
    if "compiled" not in state:  # a resumed run keeps the decision it started with (its checkpoint's)
        state["compiled"] = compiles(task, device, plan)
    loss_fn = task.loss  # speed (issue 2): one fused graph of the loss and, through autograd, its backward
    if state["compiled"]:
        loss_fn = compiled(task.loss, "train.compile", fallback=cfg.compile == "auto")
    objective = objective_module(model, task, planned, loss_fn)
    world, main = distributed.world_size(), distributed.is_main()
    progress = progress and main
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    for epoch in range(state["epoch"], cfg.epochs):
        lr = schedule(epoch, cfg.lr)
        for group in (g for opt in optimizers.values() for g in opt.param_groups):
            group["lr"] = lr
        model.train()
        start = time.perf_counter()
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # bound, reconstruction, kl (summed over examples)
        n_examples, beta = 0, float("nan")
        bar = tqdm(
            _planned_batches(model, task, plan, generator),
            total=task.num_batches() * sum(phase.passes for phase in plan),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for i, (phase, batch) in enumerate(bar):
            terms, loss, finite = update(objective, optimizers, phase, batch, state["step"], autocast=autocast)
            if not finite:
                bar.close()
                kept = f"{run / CHECKPOINT} (after epoch {state['epoch']})" if state["epoch"] else "no checkpoint yet"
                raise TrainingError(
                    f"non-finite loss ({loss.item()}) at step {state['step'] + 1} (epoch {epoch + 1}, batch {i + 1}); "
                    f"training stopped, last good checkpoint kept: {kept}; a new run with a smaller --set train.lr=... may get past it"
                )
            state["step"] += 1
            sums += torch.stack([terms.value.sum(), terms.reconstruction.sum(), terms.kl.sum()]).detach()
            n_examples += terms.value.shape[0]
            beta = terms.beta
            if progress and (i % 25 == 0):
                b, r, k = (sums / n_examples).tolist()
                bar.set_postfix(bound=f"{b:.2f}", rec=f"{r:.2f}", kl=f"{k:.2f}", beta=f"{beta:.3g}", refresh=False)
        bar.close()
        if world > 1:  # the epoch's means over the global batches
            totals = distributed.all_reduce_sum(torch.cat([sums, sums.new_tensor([n_examples])]))
            sums, n_examples = totals[:3], int(totals[3].item())
        bound, reconstruction, kl = (sums / max(n_examples, 1)).tolist()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": state["step"],
            "lr": lr,
            "train_bound": bound,
            "train_reconstruction": reconstruction,
            "train_kl": kl,
            "beta": beta,
            "train_seconds": time.perf_counter() - start,
        }
        if world > 1:
            record["world_size"] = world
        record.update(task.validate(model))  # every rank: a task may shard its validation (recommendation)
        record["seconds"] = time.perf_counter() - start
        state["epoch"] = epoch + 1
        _update_best(run, model, task, record, state)
        checkpoint = _checkpoint(model, optimizer, generator, state, device)
        if main:
            append_metrics(run, record)
            save_checkpoint(run, checkpoint)
        if progress:
            print(_epoch_line(record, cfg.epochs), file=sys.stderr, flush=True)


def compiles(task: Task, device: torch.device, plan: list[Phase]) -> bool:
    """Whether a run's steps run compiled: ``train.compile`` if it is a bool; for "auto", one process on a CPU
    with a C++ compiler, a task whose loss compiles to one graph (``auto_compile``), and a run of at least
    :data:`~elbolab.compiled.AUTO_MIN_UPDATES` updates, where the compile's tens of seconds pay."""
    cfg = task.config.train
    if cfg.compile == "auto" and (distributed.active() or not getattr(task, "auto_compile", False)):
        return False
    updates = cfg.epochs * task.num_batches() * sum(phase.passes for phase in plan)
    return should_compile(cfg.compile, device, updates, minimum=AUTO_MIN_UPDATES)


def update(
    objective: torch.nn.Module, optimizers: Optimizers, phase: Phase, batch: Any, step: int, *, autocast=nullcontext()
) -> tuple[BoundTerms, torch.Tensor, bool]:
    """One optimizer update on a global batch: (terms of this rank's examples, loss, whether it was finite).

    Under N ranks each takes its shard of the batch and its loss is its share
    of the global batch mean (DDP averages the N gradients), so the update is
    the one-process update of the whole batch. A loss that is not finite on
    some rank skips the update on every rank.
    """
    world = distributed.world_size()
    with autocast:
        terms = objective(distributed.shard(batch) if world > 1 else batch, step, phase)
    loss = terms.loss() if world == 1 else -terms.value.sum() * (world / distributed.batch_rows(batch))
    if not _finite_everywhere(loss):
        return terms, loss, False
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    optimizers[phase.optimizer].step()
    return terms, loss, True


class _Objective(torch.nn.Module):
    """The task's loss of a batch as a module's forward, so DistributedDataParallel can wrap it.

    Models never compute a loss in ``forward`` (DESIGN.md); this wrapper is
    the one module whose forward does, and only for DDP's gradient hooks.
    """

    def __init__(self, model: LatentVariableModel, loss: Callable[..., BoundTerms], planned: bool) -> None:
        super().__init__()
        self.model, self.loss, self.planned = model, loss, planned

    def forward(self, batch, step: int, phase: Phase):
        if self.planned:
            return self.loss(self.model, batch, step, phase)
        return self.loss(self.model, batch, step)


def objective_module(
    model: LatentVariableModel, task: Task, planned: bool, loss: Callable[..., BoundTerms] | None = None
) -> torch.nn.Module:
    """The loss module over ``loss`` (default ``task.loss``): plain in one process, DDP-wrapped under torchrun."""
    objective = _Objective(model, loss or task.loss, planned)
    if not distributed.active():
        return objective
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(
        objective, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=_leaves_parameters_unused(model, task, planned),
    )


def _leaves_parameters_unused(model: LatentVariableModel, task: Task, planned: bool) -> bool:
    """Whether some updates leave parameters without a gradient, which DDP must then look for each step.

    RecVAE's phases differ in what they use; the GSNN bound never runs the
    recognition network (Sohn et al. 2015, eq. 9). Everything else, Mult-VAE
    and Mult-DAE's one-phase plan included, uses every parameter in every
    step, and the search would cost a graph traversal.
    """
    return (planned and len(task.update_plan(model)) > 1) or task.config.bound.name == "gsnn"


def _finite_everywhere(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (so all ranks stop together, before the step)."""
    finite = bool(torch.isfinite(loss))
    if not distributed.active():
        return finite
    bad = distributed.all_reduce_sum(torch.tensor([0.0 if finite else 1.0], device=loss.device))
    return bool(bad.item() == 0)


def _planned_batches(model, task: Task, plan: list[Phase], generator: torch.Generator):
    """(phase, batch) pairs of one epoch in plan order; ``task.end_phase`` runs after each phase's passes."""
    for phase in plan:
        for _ in range(phase.passes):
            for batch in task.batches(generator):
                yield phase, batch
        if hasattr(task, "end_phase"):
            task.end_phase(model, phase)


def _update_best(run: Path, model: LatentVariableModel, task: Task, record: dict, state: dict) -> None:
    """Keep the weights of the epoch with the best selection metric (if the task names one) in best.pt."""
    name = task.selection_metric
    if not name or name not in record or not math.isfinite(record[name]):
        return
    best = state["best"]
    if best is None or record[name] > best["value"]:
        state["best"] = {"metric": name, "value": record[name], "epoch": record["epoch"]}
        if distributed.is_main():
            atomic_write(run / BEST, lambda tmp: torch.save({"model_spec": model.spec, "model": model.state_dict()}, tmp))


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"bound {record['train_bound']:.2f}"]
    parts += [f"rec {record['train_reconstruction']:.2f}", f"kl {record['train_kl']:.2f}"]
    parts += [f"{k} {v:.4g}" for k, v in record.items() if k.startswith(("test_", "valid_"))]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
