"""Corruptions for denoising autoencoders, applied to whole batches on their device.

Each corruption is an ``nn.Module`` without parameters: ``noise(x, generator)``
returns a corrupted copy of ``x`` (pixels in [0, 1]) and never touches ``x``
itself, so the reconstruction target stays clean. Training passes no
generator (the global, seeded RNG); validation and test pass a generator
seeded the same way at every evaluation, so their numbers repeat.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from aelab.config.constraints import Probability, Range
from aelab.config.signatures import check_arguments
from aelab.errors import ConfigError


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class Corruption(nn.Module):
    """Base class: ``forward(x, generator=None)`` returns a corrupted copy of ``x``."""

    name = "corruption"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        """A short label for plots and tables, e.g. ``gaussian(sigma=0.3)``."""
        return self.name

    def caption(self) -> str:
        """What the corruption does, for a figure's reader who never saw the config, e.g. ``Gaussian noise σ=0.3``."""
        return self.describe()


class NoCorruption(Corruption):
    """The identity: a plain (not denoising) autoencoder."""

    name = "none"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def caption(self) -> str:
        return "no corruption"


class GaussianNoise(Corruption):
    """Additive isotropic Gaussian noise ``x + σ·ε``, optionally clipped back to [0, 1]."""

    name = "gaussian"

    def __init__(self, sigma: Annotated[float, Range(ge=0, what="a standard deviation")] = 0.3, clip: bool = True):
        super().__init__()
        check_arguments(GaussianNoise, locals(), "noise")
        self.sigma = float(sigma)
        self.clip = bool(clip)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        noisy = x + self.sigma * eps
        return noisy.clamp(0.0, 1.0) if self.clip else noisy

    def describe(self) -> str:
        return f"gaussian(sigma={self.sigma:g})"

    def caption(self) -> str:
        return f"Gaussian noise σ={self.sigma:g}" + ("" if self.clip else " (not clipped)")


class SaltAndPepperNoise(Corruption):
    """Each value becomes 1 (salt) or 0 (pepper) with total probability ``p``."""

    name = "salt_pepper"

    def __init__(self, p: Probability = 0.1, salt_fraction: Probability = 0.5):
        super().__init__()
        check_arguments(SaltAndPepperNoise, locals(), "noise")
        self.p, self.salt_fraction = float(p), float(salt_fraction)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = _uniform(x, generator)
        salt = u < self.p * self.salt_fraction
        pepper = (u >= self.p * self.salt_fraction) & (u < self.p)
        return torch.where(salt, torch.ones_like(x), torch.where(pepper, torch.zeros_like(x), x))

    def describe(self) -> str:
        return f"salt_pepper(p={self.p:g})"

    def caption(self) -> str:
        return f"salt & pepper on {self.p * 100:g} % of pixels"


class MaskingNoise(Corruption):
    """Masking noise (Vincent et al. 2008): each value is set to 0 with probability ``p``."""

    name = "masking"

    def __init__(self, p: Probability = 0.25):
        super().__init__()
        check_arguments(MaskingNoise, locals(), "noise")
        self.p = float(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        keep = _uniform(x, generator) >= self.p
        return x * keep

    def describe(self) -> str:
        return f"masking(p={self.p:g})"

    def caption(self) -> str:
        return f"{self.p * 100:g} % of pixels set to 0"


def corruption_kinds() -> dict[str, type[Corruption]]:
    """Every corruption class by its ``name`` (subclasses anywhere, a user's own included)."""
    found: dict[str, type[Corruption]] = {}
    todo = list(Corruption.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.setdefault(cls.name, cls)
        todo += cls.__subclasses__()
    return found


def make_corruption(kind: str, **kwargs) -> Corruption:
    """Build a corruption by its ``name`` (``none``, ``gaussian``, ``salt_pepper``, ``masking``, or a subclass's
    own)."""
    kinds = corruption_kinds()
    if kind not in kinds:
        raise ConfigError(f"unknown corruption {kind!r}; choose one of {sorted(kinds)}")
    return kinds[kind](**kwargs)
