"""Data parallelism on torch.distributed (issue 7): process group, shards, reductions, launcher.

The model: every rank holds the whole data set and the same data generator,
so all ranks build the same global batch; each rank keeps a contiguous slice
of it (:func:`shard`), DistributedDataParallel averages the gradients, and
the loss is scaled so that the average is the gradient of the *global*
batch mean. N ranks with ``train.batch_size = B`` therefore take the same
updates, in the same number of steps, as one process with batch B: the
learning rate, beta annealing and RecVAE's alternating phases count global
steps and need no change. Only the sampling noise differs (each rank draws
its own).

Launch with ``elbolab train ... --nproc N`` (which runs torchrun for you) or
``torchrun --nproc-per-node N -m elbolab train ...``. Outside a torchrun
launch every function here is the identity of a one-process world.
"""
from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from .errors import ConfigError

TIMEOUT = datetime.timedelta(minutes=30)  # a collective waits this long for a slow rank before failing


def launched() -> bool:
    """True inside a process started by torchrun for a world of more than one rank."""
    return world_size_from_env() > 1


def world_size_from_env() -> int:
    """WORLD_SIZE as torchrun set it (1 outside a launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    """True when a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the only rank that writes metrics, checkpoints and eval.json."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA) and return this rank's device.

    On CUDA each rank takes the GPU of its LOCAL_RANK; on CPU the device is unchanged.
    """
    if active() or not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def joined() -> bool:
    """True when this process has joined a process group (it then ends through :func:`leave`)."""
    return dist.is_available() and dist.is_initialized()


def leave(status: int | str | None) -> None:
    """End a rank's process with the exit status of ``sys.exit(status)``; returns at once outside a process group.

    After a run that succeeded every rank first waits for the others, so no
    rank leaves while rank 0 still writes the last checkpoint. Then the
    process ends by ``os._exit`` with stdout and stderr flushed, without
    destroying the process group and without Python's or C++'s teardown:
    gloo's threads met libstdc++'s static teardown and aborted the rank
    ("terminate called without an active exception": 2 of 20 two-rank runs
    on a 2-core AMD EPYC with no barrier, then 1 fresh-clone CI run with the
    barrier and ``destroy_process_group``). Nothing is lost: by then every
    command has closed its files, and checkpoints are written by atomic
    rename. After a failure the other ranks may be inside another
    collective, so a failed rank leaves without waiting (torchrun ends the
    rest).
    """
    if not joined():
        return
    if isinstance(status, str):  # sys.exit("message"): the message on stderr, status 1
        print(status, file=sys.stderr)
        code = 1
    else:
        code = status or 0
    if code == 0:
        dist.barrier()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to flush
            pass
    os._exit(code)


def barrier() -> None:
    if active():
        dist.barrier()


# --------------------------------------------------------------------------- shards


def shard_range(n: int, r: int | None = None, size: int | None = None) -> tuple[int, int]:
    """Rank r's contiguous slice [lo, hi) of n items; slice sizes differ by at most one."""
    r = rank() if r is None else r
    size = world_size() if size is None else size
    return n * r // size, n * (r + 1) // size


def batch_rows(batch: Any) -> int:
    """The number of examples of a batch: a tensor (dense or CSR), or a tuple whose first entry is one."""
    if isinstance(batch, (tuple, list)):
        return batch_rows(batch[0])
    return int(batch.shape[0])


def shard(batch: Any, r: int | None = None, size: int | None = None) -> Any:
    """This rank's rows of a batch: tensors (dense or sparse CSR) sliced on dim 0, tuples entry by entry, None kept."""
    if batch is None:
        return None
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard(part, r, size) for part in batch)
    lo, hi = shard_range(batch_rows(batch), r, size)
    if batch.layout == torch.sparse_csr:
        return _csr_rows(batch, lo, hi)
    return batch[lo:hi]


def _csr_rows(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    crow = x.crow_indices()
    start, stop = int(crow[lo]), int(crow[hi])
    return torch.sparse_csr_tensor(
        crow[lo : hi + 1] - start, x.col_indices()[start:stop], x.values()[start:stop],
        size=(hi - lo, x.shape[1]), check_invariants=False,
    )


# --------------------------------------------------------------------------- reductions


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (in place; ``t`` itself in a one-process world)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a one-process world); tensors travel via CPU."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-example tensors of each rank's contiguous shard, concatenated in rank order (= one process's order)."""
    if not active():
        return values
    parts = all_gather({name: v.cpu() for name, v in values.items()})
    return {name: torch.cat([part[name] for part in parts]) for name in values}


# --------------------------------------------------------------------------- launcher


def launch(nproc: int, argv: Sequence[str]) -> str | None:
    """Run ``python -m elbolab ARGV`` as ``nproc`` ranks on this machine under torchrun; None, or what failed.

    This is torchrun itself (``torch.distributed.run``), called in-process: it
    starts the ranks with RANK / WORLD_SIZE / MASTER_ADDR set (and, unless
    set, OMP_NUM_THREADS=1 per rank), and ends the whole job as soon as one
    rank fails. The answer names the first rank that failed and how.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    if launched():
        raise ConfigError("--nproc inside a torchrun launch: give the process count to torchrun only")
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "elbolab", *argv]))
    except ChildFailedError as err:
        r, failure = err.get_first_failure()
        how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        return f"rank {r} {how}"
    return None
