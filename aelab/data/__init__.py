"""Datasets: the tensor DataModule every dataset derives from, the built-in datasets, and corruptions.

A dataset is one module (a subclass of :class:`ImageDataModule` that loads its
official splits) and one config (``conf/data/<name>.yaml``).
"""

from aelab.data.arrays import ArrayFile
from aelab.data.datamodule import ImageDataModule, ImageSet, to_float_batch
from aelab.data.folder import AnomalyFolder, ImageFolder
from aelab.data.noise import Corruption, GaussianNoise, MaskingNoise, NoCorruption, SaltAndPepperNoise, make_corruption
from aelab.data.sources import CIFAR10, MNIST, FashionMNIST, FileDataset
from aelab.data.sprites import Sprites

__all__ = [
    "ImageDataModule",
    "ImageSet",
    "to_float_batch",
    "FileDataset",
    "FashionMNIST",
    "MNIST",
    "CIFAR10",
    "Sprites",
    "ImageFolder",
    "AnomalyFolder",
    "ArrayFile",
    "Corruption",
    "GaussianNoise",
    "MaskingNoise",
    "NoCorruption",
    "SaltAndPepperNoise",
    "make_corruption",
]
