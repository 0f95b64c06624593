"""Noise processes p(x~ | x) for denoising bounds.

The encoder sees x~, the likelihood scores the clean x (Im, Ahn, Memisevic &
Bengio 2017, eq. 6): every function here returns a new tensor and never
touches x, so the clean target cannot be corrupted by accident.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError


def salt_and_pepper(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each entry, with probability ``level``, is replaced by 0 or 1 with equal odds (binary data)."""
    hit = torch.rand(x.shape, generator=generator, device=x.device) < level
    salt = (torch.rand(x.shape, generator=generator, device=x.device) < 0.5).to(x.dtype)
    return torch.where(hit, salt, x)


def gaussian_noise(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + level * eps, eps ~ N(0, I) (real-valued data)."""
    return x + level * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def dropout_noise(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each entry zeroed with probability ``level``, the rest scaled by 1 / (1 - level) (inverted dropout)."""
    if level >= 1.0:
        return torch.zeros_like(x)
    if x.layout == torch.sparse_csr:  # collaborative filtering (issue 3): drop stored clicks, stay sparse
        from .sparse import dropout_values

        return dropout_values(x, level, generator)
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= level
    return x * keep.to(x.dtype) / (1.0 - level)


def no_noise(x: torch.Tensor, level: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The identity: x~ = x."""
    return x


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "none": no_noise,
    "salt_and_pepper": salt_and_pepper,
    "gaussian": gaussian_noise,
    "dropout": dropout_noise,
}


def check_corruption(name: str, level: float) -> None:
    """Raise ConfigError for an unknown process or a level outside its range."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if name in ("salt_and_pepper", "dropout") and not 0.0 <= level <= 1.0:
        raise ConfigError(f"{name} noise level must be in [0, 1], got {level}")
    if name == "gaussian" and level < 0.0:
        raise ConfigError(f"gaussian noise level must be >= 0, got {level}")


def corrupt(x: torch.Tensor, name: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A corrupted copy x~ of x drawn from the process ``name`` at ``level`` (x itself at level 0, drawing nothing)."""
    check_corruption(name, level)
    if level == 0.0:
        return x
    return CORRUPTIONS[name](x, level, generator)
