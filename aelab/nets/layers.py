"""Small shared pieces for the encoders and decoders."""

from __future__ import annotations

from typing import Literal

from torch import nn

from aelab.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


#: the names an activation option accepts (``None`` too)
Activation = Literal["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "softplus", "none", "identity", "linear"]


def make_activation(name: str | None, what: str = "activation") -> nn.Module:
    """An activation module by name; ``None``/``"none"``/``"identity"`` give the identity."""
    if name in (None, "none", "identity", "linear"):
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {['none', *ACTIVATIONS]}")
    return ACTIVATIONS[name]()


def check_shape(shape) -> tuple[int, int, int]:
    """Validate an image shape ``(channels, height, width)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"image shape must be (channels, height, width) with positive sizes (got {shape})")
    return shape


def check_vector_shape(shape) -> tuple[int, ...]:
    """Validate the shape of one input, an image ``(C, H, W)`` or a vector ``(D,)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ConfigError(
            f"input shape must be (channels, height, width) or (features,) with positive sizes (got {shape})"
        )
    return shape
