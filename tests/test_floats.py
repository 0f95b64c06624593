"""Subnormal floats are flushed on import (floats.py), and the opt-out keeps them."""
import os
import subprocess
import sys

import pytest
import torch

PRODUCT = "import elbolab, torch; print((torch.tensor([1e-30]) * 1e-10).item())"  # 1e-40 is subnormal in float32


@pytest.mark.skipif(not torch.set_flush_denormal(True), reason="this CPU cannot flush subnormals")
@pytest.mark.parametrize("keep, flushed", [("0", True), ("1", False)])
def test_import_flushes_subnormals_unless_asked_to_keep_them(keep, flushed):
    env = {**os.environ, "ELBOLAB_KEEP_DENORMALS": keep}
    value = float(subprocess.run([sys.executable, "-c", PRODUCT], env=env, check=True, capture_output=True,
                                 text=True).stdout)
    assert (value == 0.0) == flushed
