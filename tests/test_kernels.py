"""CPU speed paths (issues 2 and 3): oneDNN products in Linear layers and the reuse of freed memory.

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


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("forward_onednn,input_gradients,all_products,weight_gradients", [
    (True, False, False, False), (False, True, False, False), (True, False, True, False), (True, False, True, True)],
    ids=["backward-on-mkl", "only-dX-on-onednn", "dW-on-mkl", "backward-on-onednn"])
@pytest.mark.parametrize("tall_min_rows", [1, 10**9], ids=["tall-dW-transposed", "tall-dW-direct"])
@pytest.mark.parametrize("n_in,n_out", [(7, 11), (11, 7)])
@pytest.mark.parametrize("shape", [(5,), (3, 5)])
def test_the_linear_op_matches_nn_linear_in_value_and_every_gradient(monkeypatch, shape, n_in, n_out, forward_onednn,
                                                                     input_gradients, all_products, weight_gradients,
                                                                     tall_min_rows):
    monkeypatch.setattr(nets, "ONEDNN_MIN_OUTPUTS", 1 if forward_onednn else 10**9)  # the forward on oneDNN, or on MKL
    monkeypatch.setattr(nets, "ONEDNN_MIN_WIDTH", 1)
    monkeypatch.setattr(nets, "ONEDNN_INPUT_GRADIENTS", input_gradients)  # dX on oneDNN (AVX2 AMD), or not
    monkeypatch.setattr(nets, "ONEDNN_DX_MIN_ROWS", 1)
    monkeypatch.setattr(nets, "ONEDNN_DX_MIN_COLS", 1)
    monkeypatch.setattr(nets, "ONEDNN_ALL_PRODUCTS", all_products)  # and, or not, its gradient's two matmuls
    monkeypatch.setattr(nets, "ONEDNN_WEIGHT_GRADIENTS", weight_gradients)  # dW with them, or on MKL (Zen 4)
    monkeypatch.setattr(nets, "ONEDNN_MIN_FLOPS", 1)
    monkeypatch.setattr(nets, "ONEDNN_TALL_MIN_ROWS", tall_min_rows)  # a tall dW as (x^T g)^T, or not
    reference, layer = _pair(n_in, n_out)
    shape = (*shape, n_in)
    x = torch.randn(*shape)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert nets._use_linear_op(b, layer.weight)
    assert nets._onednn_forward(b.numel() // n_in, n_in, n_out) is forward_onednn or all_products
    g = torch.randn(*shape[:-1], n_out)
    reference(a).backward(g)
    out = layer(b)
    out.backward(g)
    assert out.shape == (*shape[:-1], n_out)
    assert torch.allclose(out, reference(a), atol=1e-5)
    assert torch.allclose(b.grad, a.grad, atol=1e-5)
    assert torch.allclose(layer.weight.grad, reference.weight.grad, atol=1e-5)
    assert layer.weight.grad.is_contiguous()  # fused Adam and the checkpoints see the usual layout
    assert torch.allclose(layer.bias.grad, reference.bias.grad, atol=1e-5)
    with torch.no_grad():  # the inference path skips autograd
        assert torch.allclose(layer(x), reference(x), atol=1e-5)


@needs_onednn
def test_onednn_linear_with_a_frozen_weight_still_gives_the_input_gradient(monkeypatch):
    monkeypatch.setattr(nets, "ONEDNN_MIN_OUTPUTS", 1)
    monkeypatch.setattr(nets, "ONEDNN_MIN_WIDTH", 1)
    reference, layer = _pair()
    layer.requires_grad_(False)
    x = torch.randn(4, 7, requires_grad=True)
    layer(x).sum().backward()
    expected = reference.weight.sum(0).expand(4, 7)
    assert torch.allclose(x.grad, expected, atol=1e-5) and layer.weight.grad is None


def test_linear_takes_nn_linear_path_for_small_outputs_float64_and_autocast():
    _, layer = _pair()
    assert not nets._use_linear_op(torch.randn(5, 7, requires_grad=True), layer.weight)  # 55 outputs, far below the thresholds
    wide = Linear(7, 2**20)
    assert nets._use_linear_op(torch.randn(2, 7), wide.weight) == torch.backends.mkldnn.is_available()
    assert not nets._use_linear_op(torch.randn(2, 7, dtype=torch.float64), wide.weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not nets._use_linear_op(torch.randn(2, 7), wide.weight)


@needs_onednn
def test_the_forward_rule_wants_wide_outputs_and_the_input_gradient_rule_mid_sized_products(monkeypatch):
    monkeypatch.setattr(nets, "ONEDNN_ALL_PRODUCTS", False)
    assert nets._onednn_forward(500, 600, 20108)  # the CF decoder: 10M outputs, 20,108 wide
    assert not nets._onednn_forward(5000, 200, 784)  # MNIST's k = 50 decoder: 3.9M outputs, but 784 wide
    monkeypatch.setattr(nets, "ONEDNN_INPUT_GRADIENTS", True)
    assert nets._onednn_input_gradient(5000, 784, 200)  # g W of MNIST's k = 50 decoder
    assert not nets._onednn_input_gradient(100, 784, 200)  # too few rows
    assert not nets._onednn_input_gradient(5000, 200, 50)  # too narrow
    assert not nets._onednn_input_gradient(500, 20108, 600)  # the CF decoder's: inner too long
    layer = Linear(200, 784)
    assert nets._use_linear_op(torch.randn(5000, 200, requires_grad=True), layer.weight)  # for its dX
    assert not nets._use_linear_op(torch.randn(5000, 200), layer.weight)  # no dX wanted: nn.functional.linear
    monkeypatch.setattr(nets, "ONEDNN_INPUT_GRADIENTS", False)
    assert not nets._onednn_input_gradient(5000, 784, 200)


def test_the_product_rule_takes_large_products_only_where_onednn_is_chosen_for_all(monkeypatch):
    monkeypatch.setattr(nets, "ONEDNN_ALL_PRODUCTS", True)
    assert nets._onednn_product(100, 784, 200)  # MNIST's first layer: 31 MFLOP
    assert not nets._onednn_product(100, 200, 200)  # 8 MFLOP: MKL is faster there
    monkeypatch.setattr(nets, "ONEDNN_ALL_PRODUCTS", False)
    assert not nets._onednn_product(100, 784, 200)


@pytest.mark.parametrize("value,expected", [("mkl", False), ("onednn", True)])
def test_elbolab_matmul_overrides_the_machine_rule(monkeypatch, value, expected):
    monkeypatch.setenv("ELBOLAB_MATMUL", value)
    assert nets._onednn_for_all_products() is expected
    assert nets._onednn_for_input_gradients() is expected


@pytest.mark.parametrize("family,matmul,expected", [("25", "", False), ("26", "", True), ("25", "onednn", True)])
def test_weight_gradients_stay_on_mkl_on_zen4_unless_onednn_is_asked_for(monkeypatch, family, matmul, expected):
    monkeypatch.setattr(nets, "_cpu_info", lambda field: {"cpu family": family}.get(field, ""))
    monkeypatch.setenv("ELBOLAB_MATMUL", matmul)
    assert nets._onednn_for_weight_gradients() is expected


def test_cpu_info_reads_a_field_of_proc_cpuinfo():
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/cpuinfo")
    with open("/proc/cpuinfo") as info:
        first = next(line for line in info if line.startswith("vendor_id"))
    assert nets._cpu_vendor() == first.split(":", 1)[1].strip()
    assert nets._cpu_info("no such field") == ""


def test_mlp_layers_are_the_onednn_aware_linear():
    net = mlp([4, 3, 2])
    assert all(isinstance(m, Linear) for m in net if isinstance(m, nn.Linear))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_freed_memory_stops_page_faults_on_a_reallocated_large_tensor():
    # A 64 MB tensor is above glibc's largest mmap threshold: without the policy every new one faults in
    # ~16,000 fresh pages; with it, once the heap has grown, the next ones reuse it. How many allocations the
    # growing takes varies from run to run (the tensor's small objects land between the freed 64 MB chunks until
    # two coalesce): seen 2 to 9 in 19 runs on a Zen 5 host, so the test looks at the last 5 of 20.
    script = """
import resource, sys, torch
import elbolab
applied = elbolab.reuse_freed_memory() if sys.argv[1] == "on" else False
def faults_of_one():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_one() for _ in range(20)]
print(applied, min(faults[-5:]), max(faults[-5:]))
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
