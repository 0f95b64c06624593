"""Network builders: MLPs and the Gaussian encoder head the papers use."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from .distributions import diagonal_gaussian
from .errors import ConfigError
from .fastmath import exp_tanh


class Tanh(nn.Tanh):
    """nn.Tanh; under torch.compile it is the one-exp formula of ``fastmath`` (twice as fast fused, same values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return exp_tanh(x) if torch.compiler.is_compiling() else torch.tanh(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module called ``name`` (a key of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


# Which float32 products of ``Linear`` run on oneDNN instead of MKL on the CPU, fixed per machine (so a
# resumed run computes exactly what the interrupted one did):
# - everywhere: a forward with at least ONEDNN_MIN_OUTPUTS output entries in rows at least ONEDNN_MIN_WIDTH
#   wide. On this project's 2-core AMD EPYC (AVX2), MKL's sgemm ran the CF decoder's [500, 600] x [600, 20108]
#   at 55-98 GFLOP/s and oneDNN at 118-136; at MNIST's widths MKL was the faster, at every batch: a Zen 2
#   (family 23 model 49) ran the k = 50 decoder's [5000, 200] x [200, 784] at 149 (MKL) / 134 (oneDNN), and the
#   k = 5000 evaluation's [2500, 200] x [200, 784] at 154 / 129.
# - on an AMD CPU without AVX-512 (that Zen 2): also the input gradient g W [rows, inner] x [inner, cols] with
#   at least ONEDNN_DX_MIN_ROWS rows and ONEDNN_DX_MIN_COLS columns and at most ONEDNN_DX_MAX_INNER inner
#   entries. oneDNN reads W (the layer's [out, in] weight) there as a row-major right operand, which it runs
#   ~25% faster than MKL: [5000, 784] x [784, 200] 187 / 150, [5000, 200] x [200, 200] 186 / 149,
#   [500, 784] x [784, 200] 181 / 146; not with fewer rows ([256, 784] 130 / 138), narrow outputs
#   ([5000, 200] x [200, 50] 101 / 113) or the CF decoder's [500, 20108] x [20108, 600] (110 / 147).
#   (Its forward, x W^T, has the transposed right operand, and a copy of W^T cost what it saved.)
# - on an AMD CPU with AVX-512: also every product of the forward and both backward matmuls with at least
#   ONEDNN_MIN_FLOPS. MKL gives AMD CPUs its AVX2 kernels: on a 2-core AMD EPYC Zen 5 (family 26) torch.mm
#   peaks at 159-177 GFLOP/s at 2048^3 and oneDNN at 356-402; MNIST's [100, 784] x [784, 200] forward runs at
#   124-142 on MKL and 223-255 on oneDNN. Below ~16 MFLOP ([100, 200] x [200, 200]) MKL is as fast or faster
#   (each product's rates: docs/results.md, section 1).
# - the weight gradient dW = g^T x, though, stays on MKL on an AMD Zen 4 (family 25), which runs AVX-512 at
#   half width: both of dW's operands are transposed and oneDNN copies one, MKL reads them in place. On a 2-core
#   EPYC family 25 model 17, compiled epochs at batch 100 (benchmarks/matmul_rules.py, three runs of 2-3
#   alternating rounds) took 4-23% less at k = 50 and -13% to +6% at k = 5 with dW on MKL; k = 1 was a tie.
#   The products alone are mixed there (docs/results.md, section 1), so the rule rests on the whole epochs.
ONEDNN_MIN_OUTPUTS = 2**20
ONEDNN_MIN_WIDTH = 2048
ONEDNN_MIN_FLOPS = 2**24
ONEDNN_DX_MIN_ROWS, ONEDNN_DX_MIN_COLS, ONEDNN_DX_MAX_INNER = 500, 200, 1024
ONEDNN_TALL_MIN_ROWS = 1024  # see _grad_weight
_HAS_ONEDNN = torch.backends.mkldnn.is_available()  # read once: torch.compile cannot trace the query


def _cpu_info(field: str) -> str:
    """A field of the first CPU in /proc/cpuinfo ('vendor_id': 'AuthenticAMD'; 'cpu family': '25'), or '' where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return ""


def _cpu_vendor() -> str:
    """The CPU's vendor id ('AuthenticAMD', 'GenuineIntel'), or '' where /proc/cpuinfo has none."""
    return _cpu_info("vendor_id")


def _amd_rule(avx512: bool) -> bool:
    """A rule that holds on an AMD CPU with (or without) AVX-512; ``ELBOLAB_MATMUL=mkl`` or ``=onednn`` overrides it."""
    choice = os.environ.get("ELBOLAB_MATMUL", "")
    if choice in ("mkl", "onednn"):
        return choice == "onednn"
    return _cpu_vendor() == "AuthenticAMD" and torch.backends.cpu.get_cpu_capability().startswith("AVX512") == avx512


def _onednn_for_all_products() -> bool:
    """Whether MKL lacks this CPU's widest kernels (AMD with AVX-512), so oneDNN takes every large product."""
    return _amd_rule(avx512=True)


def _onednn_for_input_gradients() -> bool:
    """Whether mid-sized input gradients g W run on oneDNN: on an AMD CPU without AVX-512 (measured on a Zen 2)."""
    return _amd_rule(avx512=False)


def _onednn_for_weight_gradients() -> bool:
    """Whether dW = g^T x joins the other products on oneDNN: not on an AMD Zen 4 (family 25), where MKL was faster.

    ``ELBOLAB_MATMUL=onednn`` puts it on oneDNN too.
    """
    return os.environ.get("ELBOLAB_MATMUL", "") == "onednn" or _cpu_info("cpu family") != "25"


ONEDNN_ALL_PRODUCTS = _HAS_ONEDNN and _onednn_for_all_products()
ONEDNN_WEIGHT_GRADIENTS = ONEDNN_ALL_PRODUCTS and _onednn_for_weight_gradients()
ONEDNN_INPUT_GRADIENTS = _HAS_ONEDNN and _onednn_for_input_gradients()


@torch.library.custom_op("elbolab::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b for a matrix x [N, in] on oneDNN (CPU, float32); x and W may be transposed views.

    A registered op rather than a Python function so that torch.compile keeps
    it as one opaque kernel and still fuses the elementwise work around it.
    """
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@onednn_linear.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("elbolab::linear", mutates_args=())
def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b for a matrix x [N, in] (CPU, float32), each of its three products on this CPU's faster library.

    The forward runs on oneDNN where ``_onednn_forward`` says so, else on
    MKL (``addmm``, what ``nn.functional.linear`` calls); the gradient's
    two matmuls choose on their own (``_grad_input``, ``_grad_weight``).
    """
    if _onednn_forward(x.shape[0], weight.shape[1], weight.shape[0]):
        return onednn_linear(x, weight, bias)
    return torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()


@linear.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])


def _onednn_product(rows: int, inner: int, cols: int) -> bool:
    """Whether a float32 CPU product [rows, inner] x [inner, cols] is faster on oneDNN on this machine (AVX-512 AMD)."""
    return ONEDNN_ALL_PRODUCTS and 2 * rows * inner * cols >= ONEDNN_MIN_FLOPS


def _onednn_forward(rows: int, n_in: int, n_out: int) -> bool:
    """Whether the forward x W^T + b of a layer n_in -> n_out at ``rows`` rows runs on oneDNN."""
    return (n_out >= ONEDNN_MIN_WIDTH and rows * n_out >= ONEDNN_MIN_OUTPUTS) or _onednn_product(rows, n_in, n_out)


def _onednn_input_gradient(rows: int, inner: int, cols: int) -> bool:
    """Whether the input gradient g W = [rows, inner] x [inner, cols] runs on oneDNN (see the rules above)."""
    mid_sized = rows >= ONEDNN_DX_MIN_ROWS and cols >= ONEDNN_DX_MIN_COLS and inner <= ONEDNN_DX_MAX_INNER
    return _onednn_product(rows, inner, cols) or (ONEDNN_INPUT_GRADIENTS and mid_sized)


def _grad_input(g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dL/dx = g W of a layer x W^T + b, on oneDNN where ``_onednn_input_gradient`` says so."""
    if _onednn_input_gradient(g.shape[0], g.shape[1], weight.shape[1]):
        return onednn_linear(g, weight.t(), None)
    return g @ weight


def _grad_weight(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dL/dW = g^T x [out, in], on oneDNN where ``_onednn_product`` says so and this CPU's rule allows it
    (``ONEDNN_WEIGHT_GRADIENTS``), else on MKL.

    oneDNN runs this product (its left operand transposed) fastest when its
    output is wide. A tall one (out > in) is computed as the transpose of the
    wide x^T g when there are enough rows to pay for the contiguous copy the
    gradient then needs. Measured interleaved in one process on the Zen 5,
    GFLOP/s of MKL / oneDNN / oneDNN wide + copy: the decoder's [784, 200] at
    5,000 rows 152 / 171 / 253, at 500 rows 157 / 174 / 221, at 100 rows
    145 / 147 / 104; Mult-VAE's [20108, 600] at 500 rows 129 / 142 / 129.
    """
    rows, n_out, n_in = g.shape[0], g.shape[1], x.shape[1]
    if not (ONEDNN_WEIGHT_GRADIENTS and _onednn_product(n_out, rows, n_in)):
        return g.t() @ x
    if n_in < n_out and rows >= ONEDNN_TALL_MIN_ROWS:
        return onednn_linear(x.t(), g.t(), None).t().contiguous()
    return onednn_linear(g.t(), x.t(), None)


def _linear_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, g):
    x, weight = ctx.saved_tensors
    grad_x = _grad_input(g, weight) if ctx.needs_input_grad[0] else None
    grad_w = _grad_weight(g, x) if ctx.needs_input_grad[1] else None
    grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b


linear.register_autograd(_linear_backward, setup_context=_linear_setup)


def _use_linear_op(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a layer's call goes through ``linear`` (some product of it on oneDNN) rather than nn.functional.linear."""
    if not (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() >= 2
            and _HAS_ONEDNN and not torch.is_autocast_enabled("cpu")):
        return False
    rows, n_out, n_in = x.numel() // x.shape[-1], weight.shape[0], weight.shape[1]
    return _onednn_forward(rows, n_in, n_out) or (x.requires_grad and _onednn_input_gradient(rows, n_out, n_in))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and initialisation) whose CPU float32 products run on oneDNN where faster.

    Every other case (GPU, float64, autocast, small outputs) is
    ``nn.functional.linear``; the two agree to float32 rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _use_linear_op(x, self.weight):
            return nn.functional.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # oneDNN takes a row-major matrix
        return linear(flat, self.weight, self.bias).reshape(*x.shape[:-1], self.out_features)


def mlp(sizes: Sequence[int], act: str = "tanh", final_act: bool = False) -> nn.Sequential:
    """Linear layers through ``sizes`` with ``act`` between them (and after the last if ``final_act``).

    Weights follow Glorot & Bengio (2010), as the IWAE paper (Burda et al. 2016, sec. 5) did.
    """
    if len(sizes) < 2:
        raise ConfigError(f"an MLP needs at least input and output sizes, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2 or final_act:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """q(z | x) = N(mu(x), diag sigma(x)^2): an MLP trunk, then one linear layer to [mu, log sigma]."""

    def __init__(self, in_features: int, hidden: Sequence[int], latent_dim: int, act: str = "tanh") -> None:
        super().__init__()
        self.trunk = mlp([in_features, *hidden], act, final_act=True) if hidden else nn.Identity()
        self.head = mlp([hidden[-1] if hidden else in_features, 2 * latent_dim])
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> Distribution:
        loc, log_scale = self.head(self.trunk(x)).chunk(2, dim=-1)  # [B, latent_dim] each
        return diagonal_gaussian(loc, log_scale.exp())
