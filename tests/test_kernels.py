"""CPU speed paths (issues 2 and 3): the oneDNN forward of wide Linear layers and the reuse of freed memory.

Both must be invisible in the numbers: the oneDNN layer gives nn.Linear's outputs and gradients and
state dict, and the memory policy changes where glibc takes memory from, not what the program computes.
"""
import subprocess
import sys

import pytest
import torch
from torch import nn

from elbolab import nets
from elbolab.nets import Linear, mlp


def _pair(n_in=7, n_out=11, dtype=torch.float32):
    torch.manual_seed(0)
    reference = nn.Linear(n_in, n_out).to(dtype)
    layer = Linear(n_in, n_out).to(dtype)
    layer.load_state_dict(reference.state_dict())  # the same state dict keys and shapes
    return reference, layer


@pytest.mark.parametrize("shape", [(5, 7), (3, 5, 7)])
def test_onednn_linear_matches_nn_linear_in_value_and_every_gradient(monkeypatch, shape):
    monkeypatch.setattr(nets, "ONEDNN_MIN_OUTPUTS", 1)  # force the oneDNN path on a small layer
    reference, layer = _pair()
    x = torch.randn(*shape)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert nets._use_onednn(b, layer.weight)
    g = torch.randn(*shape[:-1], 11)
    reference(a).backward(g)
    out = layer(b)
    out.backward(g)
    assert out.shape == (*shape[:-1], 11)
    assert torch.allclose(out, reference(a), atol=1e-5)
    assert torch.allclose(b.grad, a.grad, atol=1e-5)
    assert torch.allclose(layer.weight.grad, reference.weight.grad, atol=1e-5)
    assert torch.allclose(layer.bias.grad, reference.bias.grad, atol=1e-5)
    with torch.no_grad():  # the inference path skips autograd
        assert torch.allclose(layer(x), reference(x), atol=1e-5)


def test_onednn_linear_with_a_frozen_weight_still_gives_the_input_gradient(monkeypatch):
    monkeypatch.setattr(nets, "ONEDNN_MIN_OUTPUTS", 1)
    reference, layer = _pair()
    layer.requires_grad_(False)
    x = torch.randn(4, 7, requires_grad=True)
    layer(x).sum().backward()
    expected = reference.weight.sum(0).expand(4, 7)
    assert torch.allclose(x.grad, expected, atol=1e-5) and layer.weight.grad is None


def test_linear_takes_nn_linear_path_for_small_outputs_float64_and_autocast():
    _, layer = _pair()
    assert not nets._use_onednn(torch.randn(5, 7), layer.weight)  # 55 outputs, far below the threshold
    wide = Linear(7, 2**20)
    assert nets._use_onednn(torch.randn(2, 7), wide.weight) == torch.backends.mkldnn.is_available()
    assert not nets._use_onednn(torch.randn(2, 7, dtype=torch.float64), wide.weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not nets._use_onednn(torch.randn(2, 7), wide.weight)


def test_mlp_layers_are_the_onednn_aware_linear():
    net = mlp([4, 3, 2])
    assert all(isinstance(m, Linear) for m in net if isinstance(m, nn.Linear))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_stops_page_faults_on_a_reallocated_large_tensor():
    # A 64 MB tensor is above glibc's largest mmap threshold: without the policy every new one faults in
    # ~16,000 fresh pages; with it, once the heap has grown (two or three allocations), the next ones reuse it.
    script = """
import resource, sys, torch
import elbolab
applied = elbolab.reuse_freed_memory() if sys.argv[1] == "on" else False
def faults_of_one():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_one() for _ in range(8)]
print(applied, min(faults[-3:]), max(faults[-3:]))
"""
    def run(mode):
        env = {"THP_MEM_ALLOC_ENABLE": "0", "PATH": ""}
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True, env=env)
        applied, fewest, most = out.stdout.split()
        return applied == "True", int(fewest), int(most)

    applied, _, most_on = run("on")
    _, fewest_off, _ = run("off")
    assert applied
    assert fewest_off > 10_000 and most_on < 500
