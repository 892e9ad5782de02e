"""Datasets (real, torchvision-backed, and the built-in sprites), the DataModule and corruptions."""

from aelab.data.datamodule import DATASETS, ImageDataModule, to_float_batch
from aelab.data.noise import (
    CORRUPTIONS,
    Corruption,
    GaussianNoise,
    MaskingNoise,
    NoCorruption,
    SaltAndPepperNoise,
    make_corruption,
)

__all__ = [
    "DATASETS",
    "ImageDataModule",
    "to_float_batch",
    "CORRUPTIONS",
    "Corruption",
    "GaussianNoise",
    "MaskingNoise",
    "NoCorruption",
    "SaltAndPepperNoise",
    "make_corruption",
]
