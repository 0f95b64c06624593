"""The process's float mode on the CPU: subnormal float32 values flushed to zero (speed).

An IWAE bound's normalised importance weights are mostly tiny at k = 50
(softmax over 50 log-weights), so the backward pass produces subnormal
gradients (below 1.2e-38), and x86 CPUs compute on subnormals through slow
microcode. Measured on this project's 2-core Intel Xeon (AVX-512): a
compiled k = 50 IWAE step's matmuls took 4.4x longer with subnormals than
flushed (1.84 s against 0.42 s over 150 steps at batch 20). Flushing
changes results only below 1.2e-38, far under float32's resolution of any
bound, loss or weight that training or evaluation reports.
"""
from __future__ import annotations

import os

import torch


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on this CPU (``torch.set_flush_denormal``); True if supported.

    The mode is per thread, and torch's CPU worker threads inherit it only
    when they are created: so ``import elbolab`` calls it (before torch's
    first parallel operation, as a rule; the ``elbolab`` command imports it
    first), and ``elbolab.train`` and ``elbolab.evaluate`` call it again for
    the thread they run on. Measured: set after the thread pool existed, a k = 50 IWAE
    epoch took 5.4 s; set before, 1.6-1.7 s (6,000 images, batch 100).
    ``ELBOLAB_KEEP_DENORMALS=1`` keeps IEEE subnormals (for bit-level
    comparisons with other code).
    """
    if os.environ.get("ELBOLAB_KEEP_DENORMALS") == "1":
        return False
    return torch.set_flush_denormal(True)
