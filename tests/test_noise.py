"""Corruptions: their statistics, fixed generators, and a clean target."""

import pytest
import torch

from aelab.data.noise import GaussianNoise, MaskingNoise, NoCorruption, SaltAndPepperNoise
from aelab.errors import ConfigError


def test_gaussian_statistics_without_clipping():
    x = torch.full((64, 1, 32, 32), 0.5)
    noisy = GaussianNoise(sigma=0.2, clip=False)(x)
    diff = noisy - x
    assert abs(diff.mean().item()) < 0.005
    assert abs(diff.std().item() - 0.2) < 0.005


def test_gaussian_clip_stays_in_unit_range():
    x = torch.rand(16, 1, 16, 16)
    noisy = GaussianNoise(sigma=1.0, clip=True)(x)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_salt_and_pepper_statistics():
    x = torch.full((64, 1, 32, 32), 0.5)
    noisy = SaltAndPepperNoise(p=0.2)(x)
    salt = (noisy == 1).float().mean().item()
    pepper = (noisy == 0).float().mean().item()
    assert abs(salt + pepper - 0.2) < 0.01
    assert abs(salt - pepper) < 0.01
    assert ((noisy == 0.5) | (noisy == 1) | (noisy == 0)).all()


def test_masking_statistics():
    x = torch.ones(64, 3, 16, 16)
    noisy = MaskingNoise(p=0.3)(x)
    assert abs((noisy == 0).float().mean().item() - 0.3) < 0.01
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("noise", [GaussianNoise(0.3), SaltAndPepperNoise(0.1), MaskingNoise(0.25), NoCorruption()])
def test_corruption_leaves_input_untouched_and_repeats_with_a_fixed_generator(noise):
    x = torch.rand(8, 1, 12, 12)
    before = x.clone()
    a = noise(x, torch.Generator().manual_seed(3))
    b = noise(x, torch.Generator().manual_seed(3))
    assert torch.equal(x, before)
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.device == x.device


@pytest.mark.parametrize(
    "make", [lambda: GaussianNoise(-1), lambda: SaltAndPepperNoise(1.5), lambda: MaskingNoise(-0.1)]
)
def test_invalid_parameters_are_refused(make):
    with pytest.raises(ConfigError, match="noise"):
        make()


def test_denoising_target_is_the_clean_image():
    """The training objective compares the reconstruction of the corrupted input with the clean image."""
    from aelab.models import Autoencoder
    from aelab.nets import MLPDecoder, MLPEncoder

    torch.manual_seed(0)
    model = Autoencoder((1, 8, 8), bottleneck=4, encoder=MLPEncoder, decoder=MLPDecoder, noise=MaskingNoise(0.5))
    x = torch.rand(16, 1, 8, 8)
    torch.manual_seed(1)
    corrupted = model.noise(x)  # what the base class's training step hands the objective
    loss, _ = model.objective(x, corrupted)
    expected = (model.reconstruct(corrupted) - x).pow(2).mean()
    against_corrupted = (model.reconstruct(corrupted) - corrupted).pow(2).mean()
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, against_corrupted)
