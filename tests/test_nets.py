"""Encoders and decoders: shapes for any channel count and size, and the halving rule."""

import pytest
import torch

from aelab.errors import ConfigError
from aelab.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 16, 24), (3, 20, 36)]
COMBOS = [
    ("stride", "transpose"),
    ("stride", "nearest"),
    ("stride", "bilinear"),
    ("pool", "unpool"),
    ("pool", "transpose"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("down,up", COMBOS)
def test_conv_nets_round_trip_any_shape(shape, down, up):
    enc = ConvEncoder(shape, bottleneck=7, downsample=down)
    dec = ConvDecoder(shape, bottleneck=7, upsample=up)
    x = torch.rand(3, *shape)
    z, indices = enc.forward_with_indices(x)
    assert z.shape == (3, 7)
    out = dec(z, indices) if dec.uses_indices else dec(z)
    assert out.shape == x.shape


def test_unpool_decoder_decodes_codes_without_indices():
    dec = ConvDecoder((1, 28, 28), bottleneck=4, upsample="unpool")
    out = dec(torch.randn(5, 4))
    assert out.shape == (5, 1, 28, 28)
    assert torch.isfinite(out).all()


def test_unpool_uses_the_encoder_switches():
    torch.manual_seed(0)
    enc = ConvEncoder((1, 16, 16), bottleneck=8, downsample="pool")
    dec = ConvDecoder((1, 16, 16), bottleneck=8, upsample="unpool")
    x = torch.rand(2, 1, 16, 16)
    z, idx = enc.forward_with_indices(x)
    assert not torch.allclose(dec(z, idx), dec(z))


@pytest.mark.parametrize("shape", SHAPES)
def test_mlp_nets_round_trip(shape):
    enc, dec = MLPEncoder(shape, 5, hidden=[64, 32]), MLPDecoder(shape, 5, hidden=[64, 32])
    assert dec(enc(torch.rand(2, *shape))).shape == (2, *shape)
    # the decoder mirrors the encoder's widths
    assert [m.out_features for m in dec.body if isinstance(m, torch.nn.Linear)] == [32, 64]


def test_linear_autoencoder_is_affine():
    enc, dec = MLPEncoder((1, 8, 8), 3, hidden=[]), MLPDecoder((1, 8, 8), 3, hidden=[])

    def f(x):
        return dec(enc(x))

    a, b = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    # affine: f(a) + f(b) - f(0) == f(a + b)
    assert torch.allclose(f(a) + f(b) - f(torch.zeros_like(a)), f(a + b), atol=1e-5)


def test_image_that_cannot_be_halved_is_refused_with_the_rule():
    with pytest.raises(ConfigError, match=r"divisible by 8.*28x28"):
        ConvEncoder((1, 28, 28), 8, channels=[16, 32, 64])
    with pytest.raises(ConfigError, match="divisible by 4"):
        ConvDecoder((1, 30, 28), 8, channels=[16, 32])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_bottleneck_is_refused(bad):
    with pytest.raises(ConfigError, match="model.bottleneck"):
        MLPEncoder((1, 8, 8), bad)


def test_unknown_modes_name_the_choices():
    with pytest.raises(ConfigError, match="transpose.*nearest.*bilinear.*unpool"):
        ConvDecoder((1, 8, 8), 4, channels=[8], upsample="cubic")
    with pytest.raises(ConfigError, match="stride.*pool"):
        ConvEncoder((1, 8, 8), 4, channels=[8], downsample="avg")
