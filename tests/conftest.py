"""Shared fixtures: tiny configs on the embedded digits, run helpers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from elbolab.config import apply_overrides, load_preset

# One thread per test process keeps numbers identical across machines' core counts.
torch.set_num_threads(1)


def tiny_config(*overrides: str):
    """The vae-digits preset cut to a few seconds (a real model on real data)."""
    return apply_overrides(
        load_preset("vae-digits"),
        ["train.epochs=3", "train.eval_subset=100", "eval.ks=[1, 5, 50]", "eval.n_images=50", *overrides],
    )


@pytest.fixture
def tiny():
    return tiny_config


def elbolab_cmd() -> list[str]:
    """The installed ``elbolab`` script, or the module when running from a source tree."""
    exe = shutil.which("elbolab")
    return [exe] if exe else [sys.executable, "-m", "elbolab"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real command in a subprocess; returns CompletedProcess with text output."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*elbolab_cmd(), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
