"""Network builders: MLPs and the Gaussian encoder head the papers use."""
from __future__ import annotations

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


# Products with at least this many output entries (rows x out_features) run their forward through oneDNN on
# the CPU: measured on this project's 2-core AMD EPYC, MKL's sgemm reaches 55-67 GFLOP/s on the CF decoder's
# [500, 600] x [600, 20108] and oneDNN 118-122; below ~1M outputs (MNIST's batch-100 layers) MKL is the faster.
ONEDNN_MIN_OUTPUTS = 2**20
_HAS_ONEDNN = torch.backends.mkldnn.is_available()  # read once: torch.compile cannot trace the query


@torch.library.custom_op("elbolab::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b for a row-major matrix x [N, in] on oneDNN (CPU, float32).

    A registered op rather than a Python function so that torch.compile keeps
    it as one opaque kernel and still fuses the elementwise work around it;
    its gradient runs on MKL's matmuls (dx = g W, dW = g^T x), which are fast
    at these shapes.
    """
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@onednn_linear.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])


def _onednn_linear_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _onednn_linear_backward(ctx, g):
    x, weight = ctx.saved_tensors
    grad_x = g @ weight if ctx.needs_input_grad[0] else None
    grad_w = g.t() @ x if ctx.needs_input_grad[1] else None
    grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b


onednn_linear.register_autograd(_onednn_linear_backward, setup_context=_onednn_linear_setup)


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() >= 2
            and x.numel() // x.shape[-1] * weight.shape[0] >= ONEDNN_MIN_OUTPUTS
            and _HAS_ONEDNN and not torch.is_autocast_enabled("cpu"))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and initialisation) whose wide CPU float32 products run on oneDNN.

    Every other case (GPU, float64, autocast, small outputs) is
    ``nn.functional.linear``; the two agree to float32 rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _use_onednn(x, self.weight):
            return nn.functional.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # oneDNN takes a row-major matrix
        return onednn_linear(flat, self.weight, self.bias).reshape(*x.shape[:-1], self.out_features)


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
