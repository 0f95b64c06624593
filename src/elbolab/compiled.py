"""torch.compile for the hot loops (``train.compile``, opt-in; ``eval.compile``, auto; issue 2, speed).

A training step of the MNIST VAE at batch 100 is ~40 small kernels around six
matmuls; inductor fuses the elementwise work (tanh, softplus, the Gaussian
log-densities, the reductions) of the forward and the backward into a few
C++ loops and removes most of the Python dispatch. ``fallback_random`` keeps
eager's random stream, so a compiled run draws the same z as an eager one
and differs from it only by floating-point rounding; resume stays exact
because a resumed run compiles the same graph from the same RNG state.

``eval.compile = "auto"`` (the default) compiles only where it pays: on the
CPU, with a C++ compiler inductor can call, and for an evaluation of at least
:data:`AUTO_MIN_SAMPLES` importance samples. Measured on an AMD EPYC
(2 cores): 1,000 MNIST images at k = 5000 took 37 s eager and 50 s compiled
with a cold compile cache (30-34 s warm), so the compile (~20 s) pays from a
few thousand images on; a failed compile under auto warns and runs eager.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import torch

from .config import Switch
from .errors import ConfigError, ElbolabError

F = TypeVar("F", bound=Callable)
AUTO_MIN_SAMPLES = 10_000_000  # auto compiles an evaluation of n_examples * max(k) samples from here on


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would call on this machine (its ``cpp.cxx`` search: $CXX, g++), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler, or a torch without this private helper
        return None


def should_compile(switch: Switch, device: torch.device, samples: int) -> bool:
    """Whether a run compiles: ``switch`` if it is a bool; for "auto", on a CPU with a C++ compiler
    and at least :data:`AUTO_MIN_SAMPLES` samples (below that the ~20 s compile costs more than it saves)."""
    if switch != "auto":
        return bool(switch)
    return device.type == "cpu" and samples >= AUTO_MIN_SAMPLES and cpp_compiler() is not None


def compiled(fn: F, setting: str, fallback: bool = False) -> F:
    """``fn`` compiled by torch.compile (inductor, eager random numbers); a failure to compile is a ConfigError.

    ``setting`` names the config field that asked for it (e.g. ``train.compile``)
    so the message says how to turn it off. Compilation happens on the first
    call (and again for a new input shape); errors of elbolab's own code
    inside ``fn`` pass through unchanged. With ``fallback`` (a setting left
    at "auto") a failed compile is a one-line warning instead, and this and
    every later call run ``fn`` eagerly from the same random state.
    """
    fast = torch.compile(fn, options={"fallback_random": True})  # shapes / ints that vary become dynamic on recompile
    eager = False

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal eager
        if eager:
            return fn(*args, **kwargs)
        rng = torch.random.get_rng_state() if fallback else None
        try:
            return fast(*args, **kwargs)
        except ElbolabError:
            raise
        except (torch._dynamo.exc.TorchDynamoException, RuntimeError, OSError) as error:
            if not (isinstance(error, torch._dynamo.exc.TorchDynamoException) or "compile" in str(error).lower()):
                raise
            cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            cause = f"torch.compile failed ({type(error).__name__}: {cause[:200]})"
            if not fallback:
                raise ConfigError(
                    f"{cause}; it needs a working C++ compiler (gcc or clang) for inductor on CPU; "
                    f"turn it off with --set {setting}=false"
                ) from error
            print(f"elbolab: {cause}; running eagerly ({setting}=auto)", file=sys.stderr, flush=True)
            eager = True
            torch.random.set_rng_state(rng)
            return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
