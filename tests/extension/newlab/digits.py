"""scikit-learn's handwritten digits (8×8, 1,797 images) as a dataset of aelab."""

import torch
from sklearn.datasets import load_digits

from aelab.extend import ImageDataModule, ImageSet, PositiveInt, check_arguments


class Digits(ImageDataModule):
    """The digits of ``sklearn.datasets.load_digits``: 8×8 grayscale, labels 0–9, a seeded test split.

    Args:
        num_test: images held out as the test split.
        **kwargs: the options of :class:`aelab.extend.ImageDataModule` (batch sizes, val_size, limits, ...).
    """

    name = "digits"
    class_names = tuple(str(d) for d in range(10))  # known without loading: data.normal_class is checked early
    option_rules = (("num_test < 1797", "{path}.num_test={num_test} leaves no training images (1,797 in all)"),)

    def __init__(self, num_test: PositiveInt = 297, **kwargs):
        check_arguments(Digits, locals(), "data")
        super().__init__(**kwargs)
        self.shape = (1, 8, 8)  # known without loading: the model is built before the data are read
        self.num_test = int(num_test)

    def cache_key(self) -> tuple:
        return (self.num_test,)  # what changes load()'s result

    def load(self) -> ImageSet:
        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8)[:, None]  # 0..16 → 0..255
        labels = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        test, train = order[: self.num_test], order[self.num_test :]
        return ImageSet(
            images[train], labels[train], images[test], labels[test], list(self.class_names), origin="sklearn"
        )
