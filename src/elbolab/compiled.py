"""Opt-in torch.compile for the hot loops (``train.compile``, ``eval.compile``; issue 2, speed).

A training step of the MNIST VAE at batch 100 is ~40 small kernels around six
matmuls; inductor fuses the elementwise work (tanh, softplus, the Gaussian
log-densities, the reductions) of the forward and the backward into a few
C++ loops and removes most of the Python dispatch. ``fallback_random`` keeps
eager's random stream, so a compiled run draws the same z as an eager one
and differs from it only by floating-point rounding; resume stays exact
because a resumed run compiles the same graph from the same RNG state.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

from .errors import ConfigError, ElbolabError

F = TypeVar("F", bound=Callable)


def compiled(fn: F, setting: str) -> F:
    """``fn`` compiled by torch.compile (inductor, eager random numbers); a failure to compile is a ConfigError.

    ``setting`` names the config field that asked for it (e.g. ``train.compile``)
    so the message says how to turn it off. Compilation happens on the first
    call (and again for a new input shape); errors of elbolab's own code
    inside ``fn`` pass through unchanged.
    """
    fast = torch.compile(fn, options={"fallback_random": True})  # shapes / ints that vary become dynamic on recompile

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fast(*args, **kwargs)
        except ElbolabError:
            raise
        except (torch._dynamo.exc.TorchDynamoException, RuntimeError, OSError) as error:
            if isinstance(error, torch._dynamo.exc.TorchDynamoException) or "compile" in str(error).lower():
                cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ConfigError(
                    f"torch.compile failed ({type(error).__name__}: {cause[:200]}); "
                    f"it needs a working C++ compiler (gcc or clang) for inductor on CPU; "
                    f"turn it off with --set {setting}=false"
                ) from error
            raise

    return call  # type: ignore[return-value]
