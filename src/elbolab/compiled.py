"""torch.compile for the hot loops (``train.compile`` and ``eval.compile``, both "auto" by default; issue 2, speed).

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

``train.compile = "auto"`` compiles a run of at least :data:`AUTO_MIN_UPDATES`
optimizer updates, in one process on the CPU, for a task whose loss is known
to compile to one graph (``Task.auto_compile``). Measured on an AMD EPYC
(2 cores, benchmarks/compile_cost.py): a compiled MNIST step saves 0.4-0.8 ms
at batch 20 and k <= 5 and 3-17 ms at batch 100, against a compile of the
forward and backward graphs of 16-25 s with a cold inductor cache (3-5 s
warm), so the worst case (batch 20, k = 5) pays from ~50,000 updates on; the
threshold is twice that. The decision is made once, when the run starts, and
kept in its checkpoint, so ``--resume`` takes the same path and stays exact.
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
AUTO_MIN_UPDATES = 100_000  # auto compiles a training run of this many optimizer updates from here on


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would call on this machine (its ``cpp.cxx`` search: $CXX, g++), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler, or a torch without this private helper
        return None


def should_compile(switch: Switch, device: torch.device, work: int, minimum: int = AUTO_MIN_SAMPLES) -> bool:
    """Whether a run compiles: ``switch`` if it is a bool; for "auto", on a CPU with a C++ compiler and
    at least ``minimum`` units of ``work`` (importance samples of an evaluation, :data:`AUTO_MIN_SAMPLES`,
    or updates of a training run, :data:`AUTO_MIN_UPDATES`): below that the compile costs more than it saves."""
    if switch != "auto":
        return bool(switch)
    return device.type == "cpu" and work >= minimum and cpp_compiler() is not None


def compiled(fn: F, setting: str, fallback: bool = False) -> F:
    """``fn`` compiled by torch.compile (inductor, eager random numbers); a failure to compile is a ConfigError.

    ``setting`` names the config field that asked for it (e.g. ``train.compile``)
    so the message says how to turn it off. Compilation happens on the first
    call (and again for a new input shape). When the compiled call fails, ``fn``
    runs eagerly from the same random state: an error it raises there is
    ``fn``'s own and passes through unchanged; if it succeeds, the compiler was
    at fault (no C++ compiler, or an op dynamo cannot trace, such as the sparse
    CSR input of the recommendation task). With ``fallback`` (a setting left at
    "auto") that is a one-line warning, and this and every later call run
    eagerly; otherwise it is a ConfigError.
    """
    fast = torch.compile(fn, options={"fallback_random": True})  # shapes / ints that vary become dynamic on recompile
    eager = False

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal eager
        if eager:
            return fn(*args, **kwargs)
        rng = torch.random.get_rng_state()
        try:
            return fast(*args, **kwargs)
        except ElbolabError:
            raise
        except Exception as error:  # dynamo and inductor raise many types, some of them plain IndexError
            torch.random.set_rng_state(rng)
            result = fn(*args, **kwargs)  # fn's own error raises here, as it would without compile
            text = str(error).strip()
            cause = f"torch.compile failed ({type(error).__name__}: {(text.splitlines()[0] if text else '')[:200]})"
            if not fallback:
                hint = "" if cpp_compiler() else "; inductor on CPU needs a C++ compiler (gcc or clang)"
                raise ConfigError(f"{cause}{hint}; turn it off with --set {setting}=false") from error
            print(f"elbolab: {cause}; running eagerly ({setting}=auto)", file=sys.stderr, flush=True)
            eager = True
            return result

    return call  # type: ignore[return-value]
