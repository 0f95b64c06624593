"""Noise processes p(x~ | x) for denoising bounds.

The encoder sees x~, the likelihood scores the clean x (Im, Ahn, Memisevic &
Bengio 2017, eq. 6): every function here returns a new tensor and never
touches x, so the clean target cannot be corrupted by accident.
"""
from __future__ import annotations

import math
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


# --------------------------------------------------------------------------- masks (VAEAC, issue 5)
#
# A mask generator returns a boolean tensor of x's shape, True = hidden from
# the model (to be imputed). VAEAC trains on random masks OR-ed with the
# entries that are truly missing (Ivanov, Figurnov & Vetrov 2019, sec. 4.2 and
# appendix: MCAR with p = 0.2 for UCI tables; rectangles for images).


def mcar_mask(shape: torch.Size | tuple[int, ...], level: float, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Missing completely at random: each entry hidden with probability ``level``."""
    return torch.rand(shape, generator=generator, device=device) < level


def rectangle_mask(shape: torch.Size | tuple[int, ...], level: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None, image_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """One random axis-aligned rectangle hidden per flat image [B, H*W]; ``level`` is its largest side as a fraction of the image.

    ``image_shape`` defaults to the square image of shape[-1] pixels (28 x 28 for MNIST, 8 x 8 for the digits).
    """
    batch = shape[0]
    height, width = image_shape or _square(shape[-1])
    if shape[-1] != height * width:
        raise ConfigError(f"rectangle masks need images of {height}x{width} = {height * width} pixels, got {shape[-1]}")
    u = torch.rand((4, batch), generator=generator, device=device)
    h = (1 + u[0] * (level * height - 1)).long().clamp(1, height)  # [B]
    w = (1 + u[1] * (level * width - 1)).long().clamp(1, width)  # [B]
    top = (u[2] * (height - h + 1)).long()  # [B]
    left = (u[3] * (width - w + 1)).long()  # [B]
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # [B, H]
    inside_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # [B, W]
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).reshape(batch, height * width)  # [B, H*W]


def _square(n_pixels: int) -> tuple[int, int]:
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise ConfigError(f"image masks need square images, got {n_pixels} pixels per image; pass image_shape=(H, W)")
    return side, side


def rectangle_or_mcar_mask(shape: torch.Size | tuple[int, ...], level: float, generator: torch.Generator | None = None,
                           device: torch.device | str | None = None) -> torch.Tensor:
    """Per image, with equal odds, a random rectangle (largest side ``level``) or MCAR pixels (probability ``level``).

    One model for several kinds of holes: the VAEAC inpainting experiments
    train on a mixture of mask generators (Ivanov et al. 2019, sec. 5.3 and
    appendix; their code's MixtureMaskGenerator).
    """
    pick = torch.rand((shape[0], 1), generator=generator, device=device) < 0.5  # [B, 1]: True = rectangle
    rectangles = rectangle_mask(shape, level, generator, device)  # [B, P]
    pixels = mcar_mask(shape, level, generator, device)  # [B, P]
    return torch.where(pick, rectangles, pixels)


MASKS: dict[str, Callable[..., torch.Tensor]] = {"mcar": mcar_mask, "rectangle": rectangle_mask}
MASKS["rectangle_or_mcar"] = rectangle_or_mcar_mask  # MNIST inpainting (issue 5)


def hidden_mask(x: torch.Tensor, name: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A training mask for x: the generator's hidden entries OR the truly missing (NaN) ones; True = hidden."""
    if name not in MASKS:
        raise ConfigError(f"unknown mask {name!r}; choose one of {', '.join(MASKS)}")
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"mask level must be in [0, 1], got {level}")
    return MASKS[name](x.shape, level, generator, x.device) | torch.isnan(x)
