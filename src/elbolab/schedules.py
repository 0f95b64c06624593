"""Schedules: KL weight (beta) annealing and learning-rate steps."""
from __future__ import annotations

import math
from collections.abc import Callable

from .errors import ConfigError


def linear_anneal(step: int, steps: int, final: float = 1.0, cap: float = math.inf) -> float:
    """final * min(1, step / steps), never above ``cap``; ``steps = 0`` means constant ``final``.

    Covers beta warm-up (Bowman et al. 2016; Sonderby et al. 2016) and
    Mult-VAE's anneal to a cap (Liang et al. 2018, sec. 2.2.2).
    """
    value = final if steps <= 0 else final * min(1.0, step / steps)
    return min(value, cap)


def iwae_lr(epoch: int, base_lr: float) -> float:
    """Burda et al. (2016, sec. 5): lr = base * 10^(-i/7) for 3^i epochs, i = 0..7 (3,280 epochs in all)."""
    i, end = 0, 1
    while epoch >= end and i < 7:
        i += 1
        end += 3**i
    return base_lr * 10 ** (-i / 7)


def constant_lr(epoch: int, base_lr: float) -> float:
    """The same learning rate every epoch."""
    return base_lr


LR_SCHEDULES: dict[str, Callable[[int, float], float]] = {"constant": constant_lr, "iwae": iwae_lr}


def lr_schedule(name: str) -> Callable[[int, float], float]:
    """The learning-rate schedule called ``name``: a function (epoch, base_lr) -> lr."""
    try:
        return LR_SCHEDULES[name]
    except KeyError:
        raise ConfigError(f"unknown lr_schedule {name!r}; choose one of {', '.join(LR_SCHEDULES)}") from None
