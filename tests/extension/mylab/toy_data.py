"""A dataset from outside aelab: stripes, horizontal or vertical, rendered from a seed."""

from __future__ import annotations

import torch
from aelab.constraints import PositiveInt
from aelab.signatures import check_arguments

from aelab.data import ImageDataModule, ImageSet


class Stripes(ImageDataModule):
    """Images of stripes at a random phase and period; the class is the orientation.

    Args:
        size: height and width of the images.
        num_train, num_test: images in the training pool and the test split.
        **kwargs: the options of :class:`aelab.data.ImageDataModule`.
    """

    name = "stripes"
    class_names = ("horizontal", "vertical")

    def __init__(self, size: PositiveInt = 16, num_train: PositiveInt = 1200, num_test: PositiveInt = 300, **kwargs):
        check_arguments(Stripes, locals(), "data")
        super().__init__(**kwargs)
        self.shape = (1, int(size), int(size))
        self.num_train, self.num_test = int(num_train), int(num_test)

    def cache_key(self) -> tuple:
        return (self.shape, self.num_train, self.num_test)

    def load(self) -> ImageSet:
        n, size = self.num_train + self.num_test, self.shape[1]
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(2, (n,), generator=g)
        period = torch.randint(3, 7, (n, 1, 1), generator=g).float()
        phase = torch.rand(n, 1, 1, generator=g) * 6.28
        coords = torch.arange(size).float()
        rows = torch.sin(coords[None, :, None] * 6.28 / period + phase).expand(n, size, size)
        cols = torch.sin(coords[None, None, :] * 6.28 / period + phase).expand(n, size, size)
        images = torch.where(labels[:, None, None] == 0, rows, cols)
        images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, None]
        k = self.num_train
        return ImageSet(
            images[:k], labels[:k], images[k:], labels[k:], list(self.class_names), origin="stripes from seed 0"
        )
