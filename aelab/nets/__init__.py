"""Encoders and decoders as plain ``nn.Module``s (no Lightning, no Hydra).

Every encoder is built as ``Encoder(input_shape, bottleneck, **options)`` and
maps images ``[B, C, H, W]`` to codes ``[B, bottleneck]``; every decoder is
``Decoder(output_shape, bottleneck, **options)`` and maps codes back to
pre-activation images. Decoders with ``uses_indices`` (max-unpooling) also take
the encoder's pooling indices from ``encoder.forward_with_indices``.
"""

from aelab.nets.conv import ConvDecoder, ConvEncoder
from aelab.nets.mlp import MLPDecoder, MLPEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]
