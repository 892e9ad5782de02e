"""Fully connected encoder and decoder.

With ``hidden=[]`` and no code activation, encoder and decoder are single
affine maps: the linear autoencoder of Baldi & Hornik (1989), whose optimum
under MSE spans the principal subspace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from aelab.config.constraints import Bottleneck, PositiveInt, Probability
from aelab.config.signatures import check_arguments
from aelab.nets.layers import Activation, check_vector_shape, make_activation


def _mlp(sizes: Sequence[int], activation: str | None, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers


class MLPEncoder(nn.Module):
    """Flatten → hidden layers → linear map to the code (``bottleneck`` units)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        bottleneck: Bottleneck,
        hidden: Sequence[PositiveInt] = (512, 256),
        activation: Activation | None = "relu",
        code_activation: Activation | None = None,
        dropout: Probability = 0.0,
    ):
        super().__init__()
        check_arguments(MLPEncoder, locals(), "model.encoder", {"bottleneck": "model.bottleneck"})
        self.input_shape = check_vector_shape(input_shape)
        self.bottleneck = int(bottleneck)
        sizes = [math.prod(self.input_shape), *[int(h) for h in hidden]]
        self.body = nn.Sequential(nn.Flatten(), *_mlp(sizes, activation, dropout))
        self.head = nn.Linear(sizes[-1], self.bottleneck)
        self.code_activation = make_activation(code_activation, "code activation")
        self.code_activation_name = code_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.code_activation(self.head(self.body(x)))


class MLPDecoder(nn.Module):
    """Code → hidden layers → linear map to the image; returns pre-activation outputs.

    ``hidden`` is given in the encoder's order (e.g. ``[512, 256]``) and mirrored.
    """

    uses_indices = False

    def __init__(
        self,
        output_shape: Sequence[int],
        bottleneck: Bottleneck,
        hidden: Sequence[PositiveInt] = (512, 256),
        activation: Activation | None = "relu",
        dropout: Probability = 0.0,
    ):
        super().__init__()
        check_arguments(MLPDecoder, locals(), "model.decoder", {"bottleneck": "model.bottleneck"})
        self.output_shape = check_vector_shape(output_shape)
        self.bottleneck = int(bottleneck)
        sizes = [self.bottleneck, *[int(h) for h in reversed(list(hidden))]]
        self.body = nn.Sequential(*_mlp(sizes, activation, dropout))
        self.head = nn.Linear(sizes[-1], math.prod(self.output_shape))

    def forward(self, z: torch.Tensor, indices=None) -> torch.Tensor:
        return self.head(self.body(z)).view(z.shape[0], *self.output_shape)
