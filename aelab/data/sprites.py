"""Sprites: a built-in procedural image dataset with known generating factors.

In the spirit of dSprites (Matthey et al. 2017): each image shows one white
shape on black, drawn from independent factors

* ``shape``    — square, ellipse or heart (also the class label),
* ``scale``    — 6 levels in [0.5, 1],
* ``rotation`` — 40 levels in [0, 2π),
* ``pos_x``, ``pos_y`` — 32 levels each in [0, 1] (shape kept inside the frame),
* ``hue``      — only for 3-channel images: the shape's colour.

Rendering is vectorised and deterministic given the seed (anti-aliased by
supersampling), so tests and offline demos need no files at all.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch

from aelab.config.constraints import PositiveInt, Range
from aelab.config.signatures import check_arguments
from aelab.data.datamodule import ImageDataModule, ImageSet
from aelab.errors import ConfigError

SHAPES = ("square", "ellipse", "heart")
SCALES = torch.linspace(0.5, 1.0, 6)
ROTATIONS = torch.arange(40) * (2 * math.pi / 40)
POSITIONS = torch.linspace(0.0, 1.0, 32)
# Half the largest extent of each unit shape, so it stays inside the frame at any rotation.
_EXTENT = {"square": math.sqrt(2.0), "ellipse": 1.0, "heart": 1.3}


def _inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether points (u, v) in the shape's unit frame lie inside it (v points up)."""
    if shape == "square":
        return (u.abs() <= 0.85) & (v.abs() <= 0.85)
    if shape == "ellipse":
        return u.square() + (v / 0.55).square() <= 1.0
    # heart: (x² + y² − 1)³ − x² y³ ≤ 0, shifted so its centre of mass sits near 0
    x, y = u * 1.05, v * 1.05 + 0.1
    return (x.square() + y.square() - 1).pow(3) - x.square() * y.pow(3) <= 0


def sample_factors(n: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` factor rows (index per factor) uniformly and independently."""
    cols = [
        torch.randint(len(SHAPES), (n,), generator=generator),
        torch.randint(len(SCALES), (n,), generator=generator),
        torch.randint(len(ROTATIONS), (n,), generator=generator),
        torch.randint(len(POSITIONS), (n,), generator=generator),
        torch.randint(len(POSITIONS), (n,), generator=generator),
    ]
    if channels == 3:
        cols.append(torch.randint(12, (n,), generator=generator))  # 12 hues
    return torch.stack(cols, dim=1)


def render(factors: torch.Tensor, height: int, width: int, channels: int, supersample: int = 3) -> torch.Tensor:
    """Render factor rows into uint8 images ``[N, channels, height, width]``."""
    n = factors.shape[0]
    ss = supersample
    ys = (torch.arange(height * ss, dtype=torch.float32) + 0.5) / ss
    xs = (torch.arange(width * ss, dtype=torch.float32) + 0.5) / ss
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    out = torch.empty(n, 1, height, width)
    radius_unit = 0.25 * min(height, width)
    for shape_id, shape in enumerate(SHAPES):
        rows = (factors[:, 0] == shape_id).nonzero().flatten()
        for chunk in rows.split(512):
            f = factors[chunk]
            radius = SCALES[f[:, 1]] * radius_unit
            theta = ROTATIONS[f[:, 2]]
            margin = radius * _EXTENT[shape] + 0.5
            cx = margin + POSITIONS[f[:, 3]] * (width - 2 * margin).clamp(min=0)
            cy = margin + POSITIONS[f[:, 4]] * (height - 2 * margin).clamp(min=0)
            dx = gx[None] - cx[:, None, None]
            dy = cy[:, None, None] - gy[None]  # image rows grow downwards; v points up
            cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
            u = (cos * dx + sin * dy) / radius[:, None, None]
            v = (-sin * dx + cos * dy) / radius[:, None, None]
            mask = _inside(shape, u, v).float()
            out[chunk, 0] = mask.reshape(len(chunk), height, ss, width, ss).mean(dim=(2, 4))
    if channels == 3:
        hue = factors[:, 5].float() / 12.0
        rgb = _hue_to_rgb(hue)  # [N, 3]
        out = out * rgb[:, :, None, None]
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def _hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """Fully saturated, full-value HSV → RGB for hues in [0, 1)."""
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + hue[:, None] * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def factor_names(channels: int) -> list[str]:
    """Names of the factor columns for images with ``channels`` channels."""
    names = ["shape", "scale", "rotation", "pos_x", "pos_y"]
    return names + ["hue"] if channels == 3 else names


def make_sprites(num_images: int, image_size: int | tuple[int, int] = 28, channels: int = 1, seed: int = 0):
    """Render ``num_images`` sprites; returns ``(images uint8, labels, factors)``."""
    if isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = (int(s) for s in image_size)
    if min(height, width) < 8:
        raise ConfigError(f"data.image_size must be at least 8 pixels on each side (got {height}x{width})")
    if num_images < 1:
        raise ConfigError(f"sprites need at least one image (got {num_images})")
    generator = torch.Generator().manual_seed(int(seed))
    factors = sample_factors(num_images, channels, generator)
    images = render(factors, height, width, channels)
    return images, factors[:, 0].clone(), factors


class Sprites(ImageDataModule):
    """The built-in sprites as a dataset: rendered from a seed, nothing to download.

    Args:
        image_size: one integer, or ``[height, width]`` (at least 8 pixels each).
        channels: 1 (white on black) or 3 (coloured, adds a ``hue`` factor).
        num_train, num_test: images in the training pool (``val_size`` of them become validation) and the test split.
        sprites_seed: which sprites are rendered (the dataset itself, not the run).
        **kwargs: the options of :class:`~aelab.data.datamodule.ImageDataModule`.
    """

    name = "sprites"
    class_names = SHAPES
    has_factors = True

    def __init__(
        self,
        image_size: Annotated[int, Range(ge=8)] | list[Annotated[int, Range(ge=8)]] = 28,
        channels: Literal[1, 3] = 1,
        num_train: PositiveInt = 7000,
        num_test: PositiveInt = 1000,
        sprites_seed: int = 0,
        **kwargs,
    ):
        check_arguments(Sprites, locals(), "data")
        super().__init__(**kwargs)
        size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2:
            raise ConfigError(f"data.image_size must be one integer or [height, width] (got {image_size})")
        self.shape = (int(channels), *size)
        self.num_train, self.num_test, self.sprites_seed = int(num_train), int(num_test), int(sprites_seed)

    def cache_key(self) -> tuple:
        return (self.shape, self.num_train, self.num_test, self.sprites_seed)

    def load(self) -> ImageSet:
        channels, height, width = self.shape
        images, labels, factors = make_sprites(
            self.num_train + self.num_test, (height, width), channels, self.sprites_seed
        )
        n = self.num_train
        return ImageSet(
            train_images=images[:n],
            train_labels=labels[:n],
            test_images=images[n:],
            test_labels=labels[n:],
            class_names=list(SHAPES),
            origin=f"sprites rendered from seed {self.sprites_seed}",
            train_factors=factors[:n],
            test_factors=factors[n:],
            factor_names=factor_names(channels),
        )
