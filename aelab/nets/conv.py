"""Convolutional encoder and decoder.

The encoder halves height and width once per stage, by a strided convolution
(``downsample="stride"``) or by a convolution followed by 2×2 max-pooling
(``downsample="pool"``), then maps the feature map to the code with a linear
layer. The decoder mirrors it; each stage doubles the size by

* ``transpose`` — a transposed convolution with stride 2,
* ``nearest`` / ``bilinear`` — resize, then a convolution (Odena et al. 2016),
* ``unpool`` — max-unpooling with the encoder's pooling indices, then a convolution.

Any channel count and any height/width divisible by ``2 ** stages`` works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.config.constraints import Bottleneck, PositiveInt
from aelab.config.signatures import check_arguments
from aelab.errors import ConfigError
from aelab.nets.layers import Activation, check_shape, make_activation


def check_shape_for_conv(shape: Sequence[int]) -> tuple[int, int, int]:
    """Images ``(C, H, W)``; vectors are refused with the model that takes them."""
    if len(tuple(shape)) == 1:
        raise ConfigError(
            f"the conv nets take images (channels, height, width), but the data are vectors of {tuple(shape)[0]} "
            "features: use model=mlp (or model=linear, model=vae) for vector data"
        )
    return check_shape(shape)


def _check_halvable(shape: tuple[int, int, int], stages: int) -> tuple[int, int]:
    _, height, width = shape
    factor = 2**stages
    if stages < 1:
        raise ConfigError("the conv nets need at least one stage: model.encoder.channels must not be empty")
    if height % factor or width % factor:
        raise ConfigError(
            f"a conv stack of {stages} stages halves the image {stages} times, so height and width must be "
            f"divisible by {factor}; the images are {height}x{width}. Use fewer stages "
            f"(shorter model.encoder.channels) or an image size divisible by {factor}."
        )
    return height // factor, width // factor


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class ConvEncoder(nn.Module):
    """Conv stages that each halve the image, then a linear map to the code."""

    def __init__(
        self,
        input_shape: Sequence[int],
        bottleneck: Bottleneck,
        channels: Sequence[PositiveInt] = (32, 64),
        downsample: Literal["stride", "pool"] = "stride",
        kernel_size: PositiveInt = 3,
        activation: Activation | None = "relu",
        batch_norm: bool = False,
        code_activation: Activation | None = None,
    ):
        super().__init__()
        check_arguments(ConvEncoder, locals(), "model.encoder", {"bottleneck": "model.bottleneck"})
        if int(kernel_size) % 2 != 1:
            raise ConfigError(f"model.encoder.kernel_size must be odd (got {kernel_size})")
        self.input_shape = check_shape_for_conv(input_shape)
        self.bottleneck = int(bottleneck)
        self.channels = [int(c) for c in channels]
        self.downsample = downsample
        h, w = _check_halvable(self.input_shape, len(self.channels))
        self.feature_shape = (self.channels[-1], h, w)
        k, pad = int(kernel_size), int(kernel_size) // 2
        self.stages = nn.ModuleList()
        c_in = self.input_shape[0]
        for c_out in self.channels:
            stride = 2 if downsample == "stride" else 1
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad),
                    _norm(c_out, batch_norm),
                    make_activation(activation),
                )
            )
            c_in = c_out
        self.head = nn.Linear(math.prod(self.feature_shape), self.bottleneck)
        self.code_activation = make_activation(code_activation, "code activation")
        self.code_activation_name = code_activation

    def forward_with_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Encode, also returning the max-pool indices (``None`` for strided encoders)."""
        indices: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            if self.downsample == "pool":
                x, idx = F.max_pool2d(x, 2, return_indices=True)
                indices.append(idx)
        z = self.code_activation(self.head(x.flatten(1)))
        return z, (indices if self.downsample == "pool" else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_indices(x)[0]


def unpool2x(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """2x2 max-unpooling: each value to its recorded position in a plane twice the size, zeros elsewhere.

    The same as ``F.max_unpool2d(x, indices, 2)``, written as one scatter so that it traces
    (TorchScript) and exports (ONNX) with a dynamic batch size.
    """
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, 4 * h * w).scatter(2, indices.flatten(2), x.flatten(2))
    return out.view(b, c, 2 * h, 2 * w)


class _UnpoolStage(nn.Module):
    """Max-unpool (with the encoder's indices, or fixed top-left switches) then a convolution."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
        if indices is None:
            # No switches known (decoding a sampled or interpolated code): put each value at
            # the top-left of its 2x2 window, like zero-insertion upsampling.
            b, c, h, w = x.shape
            rows = torch.arange(h, device=x.device) * 2 * (2 * w)
            cols = torch.arange(w, device=x.device) * 2
            indices = (rows[:, None] + cols[None, :]).expand(b, c, h, w)
        return self.conv(unpool2x(x, indices))


class ConvDecoder(nn.Module):
    """Linear map from the code to a feature map, then stages that each double the image.

    ``channels`` is given in the encoder's order (e.g. ``[32, 64]``) and mirrored.
    Returns pre-activation outputs of shape ``output_shape``.
    """

    def __init__(
        self,
        output_shape: Sequence[int],
        bottleneck: Bottleneck,
        channels: Sequence[PositiveInt] = (32, 64),
        upsample: Literal["transpose", "nearest", "bilinear", "unpool"] = "transpose",
        kernel_size: PositiveInt = 3,
        activation: Activation | None = "relu",
        batch_norm: bool = False,
    ):
        super().__init__()
        check_arguments(ConvDecoder, locals(), "model.decoder", {"bottleneck": "model.bottleneck"})
        k = int(kernel_size)
        if k < 1 or (upsample != "transpose" and k % 2 != 1):
            raise ConfigError(f"model.decoder.kernel_size must be odd for {upsample} upsampling (got {kernel_size})")
        if upsample == "transpose" and k < 2:
            raise ConfigError(f"a stride-2 transposed convolution needs model.decoder.kernel_size >= 2 (got {k})")
        self.output_shape = check_shape_for_conv(output_shape)
        self.bottleneck = int(bottleneck)
        self.channels = [int(c) for c in channels]
        self.upsample = upsample
        self.uses_indices = upsample == "unpool"
        h, w = _check_halvable(self.output_shape, len(self.channels))
        self.feature_shape = (self.channels[-1], h, w)
        self.head = nn.Linear(self.bottleneck, math.prod(self.feature_shape))
        self.head_activation = make_activation(activation)
        widths = self.channels[::-1] + [self.output_shape[0]]  # e.g. 64 → 32 → C
        self.stages = nn.ModuleList()
        self.post = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(widths) - 2
            self.stages.append(self._up(c_in, c_out, k))
            self.post.append(
                nn.Identity() if last else nn.Sequential(_norm(c_out, batch_norm), make_activation(activation))
            )

    def _up(self, c_in: int, c_out: int, k: int) -> nn.Module:
        if self.upsample == "transpose":
            # output = 2*input exactly: odd k uses padding (k-1)/2 and output_padding 1,
            # even k padding (k-2)/2 and output_padding 0.
            pad, out_pad = ((k - 1) // 2, 1) if k % 2 else ((k - 2) // 2, 0)
            return nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=pad, output_padding=out_pad)
        if self.upsample in ("nearest", "bilinear"):
            up = nn.Upsample(
                scale_factor=2, mode=self.upsample, **({"align_corners": False} if self.upsample == "bilinear" else {})
            )
            return nn.Sequential(up, nn.Conv2d(c_in, c_out, k, padding=k // 2))
        return _UnpoolStage(c_in, c_out, k)

    def forward(self, z: torch.Tensor, indices: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.head_activation(self.head(z)).view(z.shape[0], *self.feature_shape)
        pool_indices = list(reversed(indices)) if indices is not None else [None] * len(self.stages)
        for stage, post, idx in zip(self.stages, self.post, pool_indices):
            x = stage(x, idx) if self.uses_indices else stage(x)
            x = post(x)
        return x
