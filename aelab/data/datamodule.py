"""One tensor-backed LightningDataModule for every dataset aelab knows.

The whole dataset lives in memory as a uint8 tensor ``[N, C, H, W]``; a batch
is a slice of it (one gather, no per-item PIL transform, no worker processes).
Images become float pixels in [0, 1] after they reach the batch's device
(``on_after_batch_transfer``), so a GPU run moves bytes, not floats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aelab.data.sources import SOURCES, ImageSet, load_file_source
from aelab.data.sprites import factor_names, make_sprites
from aelab.errors import ConfigError
from aelab.seeds import step_seed

log = logging.getLogger(__name__)

DATASETS = tuple(sorted(SOURCES)) + ("sprites",)
BINARIZE_MODES = ("none", "dynamic", "fixed")


@dataclass
class Split:
    """One split held in memory: images (uint8), labels, source ids and optional generating factors.

    ``ids`` number the images of the source: official training images
    ``0..N-1``, official test images from ``TEST_ID_OFFSET`` on.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    factors: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, index: torch.Tensor) -> "Split":
        """The rows ``index`` of this split, as a new split."""
        return Split(
            self.images[index],
            self.labels[index],
            self.ids[index],
            None if self.factors is None else self.factors[index],
        )

    def with_images(self, images: torch.Tensor) -> "Split":
        """The same split with other (e.g. binarized) images."""
        return Split(images, self.labels, self.ids, self.factors)


TEST_ID_OFFSET = 10_000_000


class TensorBatches(Dataset):
    """A dataset whose items are whole batches: ``dataset[list_of_indices]`` gathers them."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.split.images.device)
        batch = {"image": self.split.images[index], "label": self.split.labels[index], "id": self.split.ids[index]}
        if self.split.factors is not None:
            batch["factors"] = self.split.factors[index]
        return batch


class BatchIndexSampler(Sampler):
    """Yields lists of indices, one list per batch: this process's share of each global batch.

    The order of an epoch is a permutation drawn from ``(seed, epoch)``, so
    it is the same on every DDP rank and the same after a resume (Lightning
    calls :meth:`set_epoch` before each training epoch). With ``world_size``
    processes, a global batch of ``batch_size * world_size`` images is cut into
    one slice per rank: the ranks together see every image of the epoch at
    most once, and a 2-process run with per-process batch ``B`` takes the same
    optimisation steps as a 1-process run with batch ``2B``.

    Training (``even=True``) gives every rank the same number of batches, as
    DDP requires, dropping at most ``world_size - 1`` images of the epoch's
    last, partial global batch. Evaluation (``even=False``) covers every image
    exactly once; a rank may get one batch fewer.
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, even: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.even = even
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of training epoch ``epoch``."""
        self.epoch = int(epoch)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_items, generator=generator)

    def _slices(self) -> list[tuple[int, int]]:
        """``(start, stop)`` in the epoch's order of each of this rank's batches."""
        global_batch = self.batch_size * self.world_size
        out = []
        for start in range(0, self.num_items, global_batch):
            size = min(global_batch, self.num_items - start)
            if size < global_batch and (self.drop_last or (self.even and size < self.world_size)):
                break
            base, extra = divmod(size, self.world_size)  # split evenly: sizes differ by at most one
            lo = start + self.rank * base + min(self.rank, extra)
            hi = lo + base + (1 if self.rank < extra else 0)
            if hi > lo:
                out.append((lo, hi))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for lo, hi in self._slices():
            yield order[lo:hi].tolist()

    def __len__(self) -> int:
        return len(self._slices())


@lru_cache(maxsize=4)
def _load_cached(dataset: str, root: str | None, download: bool, sprites_key: tuple | None) -> ImageSet:
    """Load a dataset once per process (tests and sweeps build many DataModules)."""
    if dataset == "sprites":
        image_size, channels, num_train, num_test, seed = sprites_key
        images, labels, factors = make_sprites(num_train + num_test, image_size, channels, seed)
        return ImageSet(
            train_images=images[:num_train],
            train_labels=labels[:num_train],
            test_images=images[num_train:],
            test_labels=labels[num_train:],
            class_names=["square", "ellipse", "heart"],
            origin=f"sprites rendered from seed {seed}",
            train_factors=factors[:num_train],
            test_factors=factors[num_train:],
            factor_names=factor_names(channels),
        )
    return load_file_source(dataset, root, download)


def binarize_fixed(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Binarize uint8 images once: pixel → 255 with probability pixel/255, using ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    probs = images.float() / 255.0
    return (torch.rand(probs.shape, generator=generator) < probs).to(torch.uint8) * 255


class ImageDataModule(L.LightningDataModule):
    """Fashion-MNIST, MNIST, CIFAR-10 or the built-in sprites, held as uint8 tensors.

    Args:
        dataset: ``fashion_mnist`` (default), ``mnist``, ``cifar10`` or ``sprites``.
        root: data root searched first for the files (and downloaded into).
        download: try a torchvision download when the files are found nowhere.
        batch_size: training batch size; ``eval_batch_size`` for val/test (default: same).
        val_size: images held out of the official training split for validation.
        seed: fixes the train/val split, the order of batches and fixed binarization.
        limit_train, limit_val, limit_test: keep only this many images of each split.
        normal_class: one-class protocol — train and val keep only this class; test keeps all.
        binarize: ``none``, ``dynamic`` (resampled every training batch; val/test binarized
            once) or ``fixed`` (every split binarized once).
        image_size, channels, num_train, num_test, sprites_seed: sprites only.
        device: ``auto`` keeps the whole dataset on the accelerator when training on a GPU
            (batches are sliced there, no host-to-device copies); ``cpu`` keeps it in host memory.

    ``batch_size`` is per process: with DDP on ``n`` devices a step sees ``n * batch_size``
    images. The DataModule shards batches across ranks itself (the Trainer's
    ``use_distributed_sampler`` stays off).
    """

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = "data",
        download: bool = True,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        seed: int = 0,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        normal_class: int | None = None,
        binarize: str = "none",
        shuffle: bool = True,
        drop_last: bool = False,
        image_size: int | list[int] | None = None,
        channels: int | None = None,
        num_train: int | None = None,
        num_test: int | None = None,
        sprites_seed: int = 0,
        device: str = "auto",
    ):
        super().__init__()
        if device not in ("auto", "cpu"):
            raise ConfigError(f"data.device={device!r} is not one of ['auto', 'cpu']")
        self.device = device
        self._on_device: dict[int, tuple[Split, Split]] = {}
        if dataset not in DATASETS:
            raise ConfigError(f"unknown dataset data.dataset={dataset!r}; choose one of {list(DATASETS)}")
        if binarize not in BINARIZE_MODES:
            raise ConfigError(f"data.binarize={binarize!r} is not one of {list(BINARIZE_MODES)}")
        if int(batch_size) < 1:
            raise ConfigError(f"data.batch_size must be a positive integer (got {batch_size})")
        for name, value in (("limit_train", limit_train), ("limit_val", limit_val), ("limit_test", limit_test)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"data.{name} must be a positive number of images or null (got {value})")
        sprite_opts = {"image_size": image_size, "channels": channels, "num_train": num_train, "num_test": num_test}
        if dataset != "sprites" and any(v is not None for v in sprite_opts.values()):
            given = [k for k, v in sprite_opts.items() if v is not None]
            raise ConfigError(f"data options {given} apply to data=sprites only, not to {dataset}")
        self.dataset = dataset
        self.root = str(Path(root).expanduser()) if root else None
        self.download = bool(download)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.val_size = int(val_size)
        self.seed = int(seed)
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test}
        self.normal_class = None if normal_class is None else int(normal_class)
        self.binarize = binarize
        self.shuffle = shuffle
        self.drop_last = drop_last
        if dataset == "sprites":
            size = image_size if image_size is not None else 28
            size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
            if len(size) != 2:
                raise ConfigError(f"data.image_size must be one integer or [height, width] (got {image_size})")
            self._sprites_key = (size, int(channels or 1), int(num_train or 7000), int(num_test or 1000), int(sprites_seed))
            self._dims = (self._sprites_key[1], *size)
            self._num_classes = 3
        else:
            self._sprites_key = None
            self._dims = SOURCES[dataset].shape
            self._num_classes = len(SOURCES[dataset].class_names)
        if self.normal_class is not None and not 0 <= self.normal_class < self._num_classes:
            raise ConfigError(
                f"data.normal_class={normal_class} is not a class of {dataset} (0..{self._num_classes - 1})"
            )
        self.splits: dict[str, Split] = {}
        self.class_names: list[str] = []
        self.factor_names: list[str] = []
        self.origin = ""

    # ------------------------------------------------------------------ shape
    @property
    def dims(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the images, known before any file is read."""
        return self._dims

    @property
    def num_classes(self) -> int:
        return self._num_classes

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Find (or download) the files; raises DatasetNotFoundError with the places searched."""
        _load_cached(self.dataset, self.root, self.download, self._sprites_key)

    def setup(self, stage: str | None = None) -> None:
        """Build the train/val/test splits (idempotent)."""
        if self.splits:
            return
        data = _load_cached(self.dataset, self.root, self.download, self._sprites_key)
        self.class_names = list(data.class_names)
        self.factor_names = list(data.factor_names)
        self.origin = data.origin
        pool = Split(data.train_images, data.train_labels, torch.arange(len(data.train_labels)), data.train_factors)
        test = Split(data.test_images, data.test_labels, TEST_ID_OFFSET + torch.arange(len(data.test_labels)), data.test_factors)
        if not 0 < self.val_size < len(pool):
            raise ConfigError(f"data.val_size must lie between 1 and {len(pool) - 1} for {self.dataset} (got {self.val_size})")
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(pool), generator=generator)
        val, train = pool.select(order[: self.val_size]), pool.select(order[self.val_size :])
        if self.normal_class is not None:
            train = train.select((train.labels == self.normal_class).nonzero().flatten())
            val = val.select((val.labels == self.normal_class).nonzero().flatten())
        test = test.select(torch.randperm(len(test), generator=generator)) if self.limits["test"] else test
        splits = {"train": train, "val": val, "test": test}
        for name, split in splits.items():
            limit = self.limits[name]
            if limit is not None and int(limit) < len(split):
                splits[name] = split.select(torch.arange(int(limit)))
        if self.binarize != "none":
            for offset, name in enumerate(("train", "val", "test")):
                if name == "train" and self.binarize == "dynamic":
                    continue
                splits[name] = splits[name].with_images(binarize_fixed(splits[name].images, self.seed + 101 + offset))
        self.splits = splits
        log.info("%s", self.describe())

    def describe(self) -> str:
        """One line: dataset, split sizes and image shape."""
        sizes = " / ".join(f"{len(self.splits[k])} {k}" for k in ("train", "val", "test")) if self.splits else "not set up"
        extra = f", normal class {self.normal_class}" if self.normal_class is not None else ""
        extra += f", binarize={self.binarize}" if self.binarize != "none" else ""
        c, h, w = self.dims
        return f"{self.dataset}: {sizes}, {c}x{h}x{w}{extra} ({self.origin})"

    # ------------------------------------------------------------ dataloaders
    def _ranks(self) -> tuple[int, int]:
        """``(rank, world_size)`` of this process in the attached trainer (``(0, 1)`` without one)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, split: Split, batch_size: int, shuffle: bool, drop_last: bool = False,
                shard: bool = False, even: bool = False, keep_on_device: bool = True) -> DataLoader:
        rank, world = self._ranks() if shard else (0, 1)
        sampler = BatchIndexSampler(len(split), batch_size, shuffle, drop_last, seed=self.seed, rank=rank, world_size=world, even=even)
        return DataLoader(TensorBatches(self._placed(split, keep_on_device)), batch_size=None, sampler=sampler, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits["train"], self.batch_size, self.shuffle, self.drop_last, shard=True, even=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"], self.eval_batch_size, False, shard=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits["test"], self.eval_batch_size, False, shard=True)

    def _placed(self, split: Split, keep: bool = True) -> Split:
        """``split`` on the device that trains, when ``data.device`` says so (copied once when ``keep``)."""
        device = self._data_device()
        if device is None or split.images.device == device:
            return split
        key = id(split)
        if key in self._on_device:
            return self._on_device[key][1]
        moved = Split(split.images.to(device), split.labels.to(device), split.ids.to(device),
                      None if split.factors is None else split.factors.to(device))
        if keep:
            self._on_device[key] = (split, moved)  # holding the original keeps its id unique
        return moved

    def _data_device(self) -> torch.device | None:
        """Where batches are sliced: the accelerator for ``device=auto`` on a GPU, else the CPU (None)."""
        if self.device == "cpu" or self.trainer is None:
            return None
        root = self.trainer.strategy.root_device
        if root.type == "cpu":
            return None
        return root

    def split_dataloader(self, name: str, limit: int | None = None, batch_size: int | None = None) -> DataLoader:
        """A sequential loader over the first ``limit`` images of split ``name``.

        The training split is served as evaluation data: with dynamic
        binarization it is binarized once (fixed seed), like val and test.
        """
        split = self.splits[name]
        if limit is not None and limit < len(split):
            split = split.select(torch.arange(int(limit)))
        if name == "train" and self.binarize == "dynamic":
            split = split.with_images(binarize_fixed(split.images, self.seed + 100))
        return self._loader(split, batch_size or self.eval_batch_size, False, keep_on_device=False)

    # ------------------------------------------------------------- on device
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 → float pixels in [0, 1] on the batch's device; dynamic binarization in training.

        The binarization of a training batch draws from a generator seeded by
        ``(seed, epoch, batch, rank)``, so a resumed run binarizes like an
        uninterrupted one.
        """
        trainer = self.trainer
        training = trainer is not None and trainer.training
        if not (training and self.binarize == "dynamic"):
            return to_float_batch(batch)
        batch_number = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        seed = step_seed(self.seed + 7, trainer.current_epoch, batch_number, trainer.global_rank)
        generator = torch.Generator(device=batch["image"].device).manual_seed(seed)
        return to_float_batch(batch, dynamic_binarize=True, generator=generator)


def to_float_batch(batch: dict, dynamic_binarize: bool = False, generator: torch.Generator | None = None) -> dict:
    """Turn a batch's uint8 ``image`` into float pixels in [0, 1] (a no-op for float images)."""
    images = batch["image"]
    if images.dtype != torch.uint8:
        return batch
    x = images.float().div_(255.0)
    if dynamic_binarize:
        x = torch.bernoulli(x, generator=generator)
    return {**batch, "image": x}
