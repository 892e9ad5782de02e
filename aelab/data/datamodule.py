"""The one tensor-backed LightningDataModule that every dataset derives from.

A dataset (``aelab.data.sprites.Sprites``, ``aelab.data.sources.FashionMNIST``,
a user's own) is a subclass that loads its official splits; the whole dataset lives
in memory as a uint8 tensor ``[N, C, H, W]``; a batch is a slice of it (one gather,
no per-item PIL transform, no worker processes).
Images become float pixels in [0, 1] after they reach the batch's device
(``on_after_batch_transfer``), so a GPU run moves bytes, not floats.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from aelab.config.constraints import NonNegativeInt, PositiveInt, Probability
from aelab.config.signatures import check_arguments
from aelab.data.chunks import CHUNK, Chunk, batch_units, count_chunks, plan_chunks
from aelab.data.seeds import step_seed
from aelab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split: images, labels, source ids, and optionally generating factors and per-pixel masks.

    ``ids`` number the images of the source: official training images
    ``0..N-1``, official test images from ``TEST_ID_OFFSET`` on. Images are
    uint8 (pixels 0..255) or float32 (values as given, e.g. tabular vectors).
    When ``rows`` is set, ``images`` is the whole memory-mapped source and the
    split holds only the index of its rows: selecting and batching never read
    more than a batch, so a set larger than RAM trains from the memory map.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    factors: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def select(self, index: torch.Tensor) -> Split:
        """The rows ``index`` of this split, as a new split."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        if self.rows is not None:
            return Split(
                self.images, self.labels[index], self.ids[index], pick(self.factors), pick(self.masks), self.rows[index]
            )
        return Split(self.images[index], self.labels[index], self.ids[index], pick(self.factors), pick(self.masks))

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The images of rows ``index`` (read from the memory map when the split is mapped).

        ``index_select``, not ``images[index]``: on a CPU, indexing gathers 2,048 Fashion-MNIST images in 1.1 ms
        and ``index_select`` in 0.1 ms (a chunk of 8 training batches, once per Lightning call)."""
        if self.rows is None:
            return self.images.index_select(0, index.to(self.images.device))
        return self.images.index_select(0, self.rows[index.to(self.rows.device)].to(self.images.device))

    def materialized(self) -> torch.Tensor:
        """All images of the split in memory."""
        return self.gather(torch.arange(len(self)))

    def with_images(self, images: torch.Tensor) -> Split:
        """The same split with other (e.g. binarized) images, held in memory."""
        return Split(images, self.labels, self.ids, self.factors, self.masks)


TEST_ID_OFFSET = 10_000_000
VAL_ID_OFFSET = 20_000_000


class TensorBatches(Dataset):
    """A dataset whose items are whole batches: ``dataset[list_of_indices]`` gathers them; ``dataset[chunk]``
    gathers the batches of a :class:`~aelab.data.chunks.Chunk` at once and says where they begin and end."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices) -> dict:
        split = self.split
        chunk = indices if isinstance(indices, Chunk) else None
        index = torch.as_tensor(chunk.indices if chunk else indices, dtype=torch.long, device=split.labels.device)
        batch = {"image": split.gather(index), "label": split.labels[index], "id": split.ids[index]}
        if split.factors is not None:
            batch["factors"] = split.factors[index]
        if split.masks is not None:
            batch["mask"] = split.masks[index]
        if chunk is not None:
            batch[CHUNK] = {"sizes": chunk.sizes, "first": chunk.first, "last": chunk.last}
        return batch


class ResumableLoader(DataLoader):
    """The training DataLoader with its sampler's position as state (Lightning saves and restores it).

    Lightning's loops resume from a mid-epoch checkpoint (SIGTERM, SLURM preemption) at
    the next batch index; with this state the data resumes there too, instead of replaying
    the epoch from its first batch.
    """

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)

    @property
    def batches_per_epoch(self) -> int:
        """Training batches in an epoch (the loader's length counts chunks of them)."""
        return self.sampler.num_batches()


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

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ):
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
        self.yielded = 0  # batches handed out in the current epoch (skipped ones included)
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained) of a mid-epoch checkpoint

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of training epoch ``epoch``."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """Where the epoch stands: saved in checkpoints, so a run stopped mid-epoch resumes at the next batch."""
        return {"epoch": self.epoch, "batches": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = (int(state["epoch"]), int(state["batches"]))

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
        order, slices = self._order(), self._slices()
        skip = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch and self.resume_at[1] < len(slices):
            skip = self.resume_at[1]  # the batches of this epoch the checkpoint had already trained on
        self.resume_at = None
        self.yielded = skip
        for lo, hi in slices[skip:]:
            self.yielded += 1
            yield order[lo:hi].tolist()

    def __len__(self) -> int:
        return len(self._slices())


class ChunkSampler(BatchIndexSampler):
    """The training sampler: this rank's batches of an epoch (as :class:`BatchIndexSampler`), handed out
    ``steps_per_call`` consecutive ones at a time as one :class:`~aelab.data.chunks.Chunk`.

    ``limit`` keeps the epoch's first so many batches (``limit_train_batches``), and chunks end after
    every ``every``-th batch (a validation inside the epoch): both set by :meth:`ImageDataModule.train_dataloader`
    from the Trainer. The position (``yielded``, saved in checkpoints) counts batches, so a run stopped
    between two chunks resumes at its next batch; a chunk is trained whole before the run stops there.
    """

    def __init__(self, *args, steps_per_call: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps_per_call = int(steps_per_call)
        self.limit: int | None = None
        self.every: int | None = None

    def num_batches(self) -> int:
        total = len(self._slices())
        return total if self.limit is None else min(total, self.limit)

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "steps_per_call": self.steps_per_call}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches, written_with = int(state["batches"]), int(state.get("steps_per_call", 1))
        if written_with != self.steps_per_call and 0 < batches < self.num_batches():
            raise ConfigError(
                f"the checkpoint stopped inside an epoch with steps_per_call={written_with}, and this run has "
                f"steps_per_call={self.steps_per_call}: continue with steps_per_call={written_with} (Lightning "
                "counts an epoch's chunks, which must not change halfway)"
            )
        super().load_state_dict(state)

    def __iter__(self) -> Iterator[Chunk]:
        order, slices, total = self._order(), self._slices(), self.num_batches()
        skip = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            skip = min(self.resume_at[1], total)  # the batches of this epoch the checkpoint had already trained on
        self.resume_at = None
        self.yielded = skip
        for start, stop in plan_chunks(skip, total, self.steps_per_call, self.every):
            parts = [order[lo:hi] for lo, hi in slices[start:stop]]
            self.yielded = stop
            yield Chunk(torch.cat(parts), [len(p) for p in parts], start, stop == total)

    def __len__(self) -> int:
        return count_chunks(self.num_batches(), self.steps_per_call, self.every)


def binarize_fixed(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Binarize images once: pixel → 255 with probability pixel/255 (uint8) or value (float), using ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    # a new tensor either way
    probs = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float().clamp(0, 1)
    noise = torch.rand(probs.shape, generator=generator)
    # in place: 0.42 → 0.30 s for 55,000 images, the same values
    return torch.lt(noise, probs).view(torch.uint8).mul_(255)


@dataclass
class ImageSet:
    """What a dataset loads: its official splits as ``[N,C,H,W]`` images (uint8, or float32 for values
    that are not pixels; ``[N, D]`` for vectors) and int64 labels.

    ``factors`` (int64 ``[N, F]``) are the generating factors when they are known
    (sprites); ``test_masks`` (uint8 ``[N,1,H,W]``, 1 = anomalous pixel) the
    ground truth of an anomaly set. ``val_*`` is an explicit validation split
    (else ``val_size`` images are held out of the training split). ``mapped``:
    the images are memory-mapped (read per batch, never copied whole); then the
    splits may share one array and name their rows in ``*_rows``. ``info``
    describes the source (path, cache file, skipped files) for ``metrics.json``.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    origin: str = ""
    train_factors: torch.Tensor | None = None
    test_factors: torch.Tensor | None = None
    factor_names: list[str] = field(default_factory=list)
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    test_masks: torch.Tensor | None = None
    mapped: bool = False
    train_rows: torch.Tensor | None = None
    val_rows: torch.Tensor | None = None
    test_rows: torch.Tensor | None = None
    has_labels: bool = True
    info: dict = field(default_factory=dict)


_LOADED: OrderedDict[tuple, ImageSet] = OrderedDict()
_KEEP_LOADED = 4


class ImageDataModule(L.LightningDataModule):
    """The tensor DataModule every dataset derives from: splits, limits, one-class, binarization, sharding.

    A dataset is a subclass that implements :meth:`load` (its official splits as
    an :class:`ImageSet`), names the options that change what it loads in
    :meth:`cache_key`, and sets ``shape`` when it knows the image shape without
    reading files. Everything else — the held-out validation split, limits,
    the one-class protocol, binarization, DDP sharding, batches as uint8
    slices turned into float pixels on the batch's device — is done here, once.

    Args:
        batch_size: training batch size per process; ``eval_batch_size`` for val/test (default: the same).
        val_size: images held out of the official training split for validation
            (when the dataset has no validation split of its own).
        val_fraction: hold out this share of the training split instead of ``val_size`` images.
        seed: the run's seed: the order of batches and fixed binarization (initialisation and corruption are
            seeded from it too, outside the data).
        split_seed: fixes which images are held out (the train/validation split, a held-out test split, the
            ``limit_test`` subset) apart from ``seed``, so the seeds of a study share one split and the overfitting
            gap measures the same images for each; ``None`` draws the split from ``seed``, as run folders written
            before this option did (their configs have no ``split_seed``: they reload with the split they trained on).
        limit_train, limit_val, limit_test: keep only this many images of each split.
        normal_class: one-class protocol — train and val keep only this class; test keeps all.
        binarize: ``none``, ``dynamic`` (resampled every training batch; val/test binarized
            once) or ``fixed`` (every split binarized once).
        shuffle, drop_last: of the training batches.
        device: ``auto`` keeps the whole dataset on the accelerator when training on a GPU
            (batches are sliced there, no host-to-device copies); ``cpu`` keeps it in host memory.

    ``batch_size`` is per process: with DDP on ``n`` devices a step sees ``n * batch_size``
    images. The DataModule shards batches across ranks itself (the Trainer's
    ``use_distributed_sampler`` stays off).
    """

    #: the dataset's name in descriptions
    name: str = "dataset"
    #: ``(channels, height, width)`` when known without reading files (else read from the data)
    shape: tuple[int, ...] | None = None
    #: class names when known without reading files (used to check ``normal_class`` early)
    class_names: tuple[str, ...] = ()
    #: whether the images have class labels (evaluations that need labels refuse datasets without)
    has_labels: bool = True
    #: whether the dataset provides the generating factors of its images
    has_factors: bool = False
    #: the label of normal images when the dataset itself marks anomalies (an MVTec-style set: 0 = good)
    normal_label: int | None = None
    #: whether the test split has per-pixel anomaly masks
    has_masks: bool = False
    #: training batches per Lightning call (the ``steps_per_call`` option; set by aelab-train)
    steps_per_call: int = 1
    #: the range of the values, option by option: ``{option: {value: "real"}}`` (``ArrayFile``: ``normalize=none``);
    #: a dataset whose values are always real numbers sets ``value_range = "real"`` instead (see :attr:`value_range`)
    value_range_when: dict[str, dict[object, str]] = {}

    def __init__(
        self,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt | None = None,
        val_size: PositiveInt = 5000,
        val_fraction: Probability | None = None,
        seed: int = 0,
        split_seed: int | None = None,
        limit_train: PositiveInt | None = None,
        limit_val: PositiveInt | None = None,
        limit_test: PositiveInt | None = None,
        normal_class: NonNegativeInt | None = None,
        binarize: Literal["none", "dynamic", "fixed"] = "none",
        shuffle: bool = True,
        drop_last: bool = False,
        device: Literal["auto", "cpu"] = "auto",
    ):
        super().__init__()
        check_arguments(ImageDataModule, locals(), "data")
        self.device = device
        self._on_device: dict[int, tuple[Split, Split]] = {}
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.val_size = int(val_size)
        self.val_fraction = None if val_fraction is None else float(val_fraction)
        self.seed = int(seed)
        self.split_seed = self.seed if split_seed is None else int(split_seed)
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test}
        self.normal_class = None if normal_class is None else int(normal_class)
        self.binarize = binarize
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._check_normal_class(list(type(self).class_names))
        self.splits: dict[str, Split] = {}
        self.class_names: list[str] = list(type(self).class_names)
        self.factor_names: list[str] = []
        self.origin = ""

    # ----------------------------------------------------------- the dataset
    def load(self) -> ImageSet:
        """The dataset's official splits (a subclass's one job)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    def cache_key(self) -> tuple:
        """The options that change what :meth:`load` returns (one load per process and key)."""
        return ()

    def _data(self) -> ImageSet:
        key = (type(self).__module__, type(self).__qualname__, *self.cache_key())
        if key in _LOADED:
            _LOADED.move_to_end(key)
            self._adopt(_LOADED[key])
            return _LOADED[key]
        data = self.load()
        _LOADED[key] = data
        while len(_LOADED) > _KEEP_LOADED:
            _LOADED.popitem(last=False)
        self._adopt(data)
        return data

    def _adopt(self, data: ImageSet) -> None:
        """What the loaded data tell about the dataset (a cached load tells every instance)."""
        self.has_labels = bool(data.has_labels)
        self.has_masks = data.test_masks is not None

    def _check_normal_class(self, class_names: list[str]) -> None:
        if self.normal_class is not None and class_names and not 0 <= self.normal_class < len(class_names):
            raise ConfigError(
                f"data.normal_class={self.normal_class} is not a class of {self.name} (0..{len(class_names) - 1})"
            )

    # ------------------------------------------------------------------ shape
    @property
    def dims(self) -> tuple[int, ...]:
        """``(channels, height, width)`` of the images (read from the data when the dataset does not know it)."""
        if self.shape is not None:
            return tuple(self.shape)
        return tuple(int(s) for s in self._data().train_images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names or self._data().class_names)

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        """Find (or download) the files; raises DatasetNotFoundError with the places searched."""
        self._data()

    def setup(self, stage: str | None = None) -> None:
        """Build the train/val/test splits (idempotent)."""
        if self.splits:
            return
        data = self._data()
        self.class_names = list(data.class_names)
        self._check_normal_class(self.class_names)
        self.factor_names = list(data.factor_names)
        self.origin = data.origin

        def rows(name: str, n: int) -> torch.Tensor | None:  # the rows of a memory-mapped array this split holds
            given = getattr(data, f"{name}_rows")
            return None if not data.mapped else given if given is not None else torch.arange(n)

        n_train, n_test = len(data.train_labels), len(data.test_labels)
        pool = Split(
            data.train_images, data.train_labels, torch.arange(n_train), data.train_factors, rows=rows("train", n_train)
        )
        test = Split(
            data.test_images,
            data.test_labels,
            TEST_ID_OFFSET + torch.arange(n_test),
            data.test_factors,
            data.test_masks,
            rows=rows("test", n_test),
        )
        generator = torch.Generator().manual_seed(self.split_seed)
        if data.val_images is not None:  # the dataset has its own validation split
            n_val = len(data.val_labels)
            val, train = (
                Split(data.val_images, data.val_labels, VAL_ID_OFFSET + torch.arange(n_val), rows=rows("val", n_val)),
                pool,
            )
        else:
            val_size = max(1, round(self.val_fraction * len(pool))) if self.val_fraction is not None else self.val_size
            if len(pool) < 2:  # nothing to split: no val_size can help
                raise ConfigError(
                    f"{data.origin or self.name} has {len(pool)} training image(s) after the test split: "
                    "too few to hold out a validation image and still train on one; add images "
                    "(at least 2 must remain for training and validation)"
                )
            if not 0 < val_size < len(pool):
                what = (
                    f"data.val_fraction={self.val_fraction} gives {val_size} images"
                    if self.val_fraction is not None
                    else f"got {val_size}"
                )
                raise ConfigError(f"data.val_size must lie between 1 and {len(pool) - 1} for {self.name} ({what})")
            order = torch.randperm(len(pool), generator=generator)
            val, train = pool.select(order[:val_size]), pool.select(order[val_size:])
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
                splits[name] = splits[name].with_images(
                    binarize_fixed(splits[name].materialized(), self.seed + 101 + offset)
                )
        self.splits = splits
        log.info("%s", self.describe())

    def all_classes(self) -> ImageDataModule:
        """The same dataset without the one-class restriction (labelled training images of every class)."""
        if self.normal_class is None:
            return self
        other = copy.copy(self)
        other.normal_class, other.splits, other._on_device = None, {}, {}
        other.setup()
        return other

    def info(self) -> dict:
        """What the dataset is, for ``metrics.json`` and the loggers: name, source, split sizes, shape, cache."""
        data = self._data()
        out = {
            "name": self.name,
            "origin": self.origin or data.origin,
            "shape": list(self.dims),
            "dtype": str(data.train_images.dtype).replace("torch.", ""),
            "classes": len(self.class_names or data.class_names),
            "memory_mapped": bool(data.mapped),
            "split_seed": self.split_seed,
            "value_range": self.value_range,
            **data.info,
        }
        if self.splits:
            out["sizes"] = {k: len(v) for k, v in self.splits.items()}
            out["content"] = self.content_fingerprint()
        return out

    #: rows of each split that :meth:`content_fingerprint` reads (evenly spaced)
    FINGERPRINT_ROWS = 512

    def content_fingerprint(self) -> str:
        """A short hash of what the splits hold — evenly spaced rows of each (images and labels) and the sizes — so a
        run continued on other images in the same layout (another ``paths.data_dir``) is told apart."""
        import hashlib

        digest = hashlib.sha256()
        for name in ("train", "val", "test"):
            split = self.splits[name]
            index = torch.linspace(0, max(len(split) - 1, 0), min(len(split), self.FINGERPRINT_ROWS)).long()
            digest.update(f"{name}:{len(split)}".encode())
            if len(split):
                digest.update(split.gather(index).cpu().contiguous().numpy().tobytes())
                digest.update(split.labels[index].cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def value_range(self) -> Literal["unit", "real"]:
        """What values the data hold: ``"unit"`` — in [0, 1] (pixels, vectors scaled into it; every built-in set) —
        or ``"real"`` — any real numbers (standardized vectors). Models clamp reconstructions of unit data to [0, 1]
        and report PSNR/SSIM and draw image grids for them; real-valued data get none of these, and a model whose
        outputs stay in [0, 1] (a sigmoid) is refused for them. A dataset of real values overrides this with a class
        attribute ``value_range = "real"``; one whose options decide it names them in :attr:`value_range_when`."""
        for option, ranges in self.value_range_when.items():
            value = getattr(self, option, None)
            if value in ranges:
                return ranges[value]  # type: ignore[return-value]
        return "unit"

    @property
    def is_images(self) -> bool:
        """Whether the data are images ``(C, H, W)`` (else vectors ``(D,)``)."""
        return len(self.dims) == 3

    def describe(self) -> str:
        """One line: dataset, split sizes and image shape."""
        sizes = (
            " / ".join(f"{len(self.splits[k])} {k}" for k in ("train", "val", "test")) if self.splits else "not set up"
        )
        extra = f", normal class {self.normal_class}" if self.normal_class is not None else ""
        extra += f", binarize={self.binarize}" if self.binarize != "none" else ""
        shape = "x".join(str(s) for s in self.dims)
        return f"{self.name}: {sizes}, {shape}{extra} ({self.origin})"

    # ------------------------------------------------------------ dataloaders
    def _ranks(self) -> tuple[int, int]:
        """``(rank, world_size)`` of this process in the attached trainer (``(0, 1)`` without one)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, split: Split, batch_size: int, shard: bool = False, keep_on_device: bool = True) -> DataLoader:
        """Evaluation batches of ``split`` in order (every image once; with ``shard``, this rank's share)."""
        rank, world = self._ranks() if shard else (0, 1)
        sampler = BatchIndexSampler(
            len(split), batch_size, False, False, seed=self.seed, rank=rank, world_size=world, even=False
        )
        return DataLoader(
            TensorBatches(self._placed(split, keep_on_device)), batch_size=None, sampler=sampler, num_workers=0
        )

    def train_dataloader(self) -> DataLoader:
        """Chunks of ``steps_per_call`` consecutive training batches (see :mod:`aelab.data.chunks`)."""
        size = int(self.steps_per_call)
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        if size > 1 and module is not None and not getattr(module, "trains_chunks", False):
            raise ConfigError(
                f"steps_per_call={size} hands {type(module).__name__} chunks of {size} batches, and its "
                "training_step takes one batch: use steps_per_call=1 with it"
            )
        rank, world = self._ranks()
        split = self.splits["train"]
        sampler = ChunkSampler(
            len(split),
            self.batch_size,
            self.shuffle,
            self.drop_last,
            seed=self.seed,
            rank=rank,
            world_size=world,
            even=True,
            steps_per_call=size,
        )
        if trainer is not None:
            sampler.limit, sampler.every = batch_units(trainer, sampler.num_batches(), size)
        return ResumableLoader(TensorBatches(self._placed(split)), batch_size=None, sampler=sampler, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"], self.eval_batch_size, shard=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits["test"], self.eval_batch_size, shard=True)

    def _placed(self, split: Split, keep: bool = True) -> Split:
        """``split`` on the device that trains, when ``data.device`` says so (copied once when ``keep``)."""
        device = self._data_device()
        if device is None or split.images.device == device or split.rows is not None:  # (a memory map stays in RAM)
            return split
        key = id(split)
        if key in self._on_device:
            return self._on_device[key][1]
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        moved = Split(
            split.images.to(device),
            split.labels.to(device),
            split.ids.to(device),
            move(split.factors),
            move(split.masks),
        )
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

    def _eval_loader(self, name: str, limit: int | None = None, batch_size: int | None = None) -> DataLoader:
        split = self.splits[name]
        if limit is not None and limit < len(split):
            split = split.select(torch.arange(int(limit)))
        if name == "train" and self.binarize == "dynamic":
            split = split.with_images(binarize_fixed(split.materialized(), self.seed + 100))
        return self._loader(split, batch_size or self.eval_batch_size, keep_on_device=False)

    def batches(
        self,
        split: str,
        limit: int | None = None,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[dict]:
        """The first ``limit`` images of ``split`` in order, as float batches on ``device``.

        The one path by which evaluations, callbacks and analysis get images:
        ``batch["image"]`` holds float pixels in [0, 1]. The training split is
        served as evaluation data: with dynamic binarization it is binarized
        once (fixed seed), like val and test.
        """
        if split not in self.splits:
            self.setup()
        for batch in self._eval_loader(split, limit, batch_size):
            if device is not None:
                batch = {k: v.to(device) for k, v in batch.items()}
            yield to_float_batch(batch)

    def images(self, split: str, limit: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """The first ``limit`` images of ``split`` as one float tensor."""
        return torch.cat([b["image"] for b in self.batches(split, limit, device)])

    # ------------------------------------------------------------- on device
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 → float pixels in [0, 1] on the batch's device; dynamic binarization in training.

        An aelab model's training chunk stays as it is: its batches become float, and are binarized,
        one at a time in the training step (:func:`aelab.data.chunks.split_chunk`). The binarization
        of a training batch draws from a generator seeded by ``(seed, epoch, batch, rank)``, so a
        resumed run binarizes like an uninterrupted one, whatever ``steps_per_call``.
        """
        info = batch.get(CHUNK)
        if info is None:
            return to_float_batch(batch)
        trainer = self.trainer
        seeds = None
        if self.binarize == "dynamic":
            epoch, rank = (trainer.current_epoch, trainer.global_rank) if trainer is not None else (0, 0)
            seeds = [step_seed(self.seed + 7, epoch, info["first"] + i, rank) for i in range(len(info["sizes"]))]
        module = trainer.lightning_module if trainer is not None else None
        if getattr(module, "trains_chunks", False):
            return {**batch, CHUNK: {**info, "binarize_seeds": seeds}}
        # another LightningModule (one batch a call, checked in train_dataloader): a float batch, as ever
        generator = None if seeds is None else torch.Generator(device=batch["image"].device).manual_seed(seeds[0])
        return to_float_batch(batch, dynamic_binarize=seeds is not None, generator=generator)


def to_float_batch(batch: dict, dynamic_binarize: bool = False, generator: torch.Generator | None = None) -> dict:
    """Turn a batch's uint8 ``image`` into float pixels in [0, 1] (float values are kept as they are)."""
    images = batch["image"]
    if images.dtype == torch.uint8:
        x = images.float().div_(255.0)
    elif dynamic_binarize:
        x = images.float().clamp(0, 1)
    else:
        return batch
    if dynamic_binarize:
        x = torch.bernoulli(x, generator=generator)
    return {**batch, "image": x}
