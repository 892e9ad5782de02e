"""Your own images: a folder of image files (``data=folder``) and an MVTec AD-style anomaly set
(``data=anomaly_folder``).

``ImageFolder`` finds images recursively (PNG, JPEG, BMP, TIFF, WebP). Labels
come from the first-level subfolder names when every image sits in one (else
the set is unlabelled). Splits come from ``train/``, ``val/``, ``test/``
subfolders when they exist, else ``data.test_fraction`` and
``data.val_fraction`` of the images are held out (drawn from ``data.split_seed``). Every image
is decoded once — in parallel worker processes — into a uint8 cache
(:mod:`aelab.data.cache`, a memory-mapped ``.npy`` keyed by the files' names,
sizes and modification times and the resize settings): the second run starts
from the cache, and a set larger than ``data.memory_budget_mb`` trains from the
memory map instead of RAM.

``AnomalyFolder`` reads the MVTec AD layout: ``train/good/`` (the only training
images), ``test/good/`` and ``test/<defect>/``, and optional
``ground_truth/<defect>/<name>_mask.png`` masks, for image- and pixel-level
anomaly detection (``eval=[anomaly]``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import numpy as np
import torch

from aelab.config.constraints import NonNegativeFloat, PositiveInt, Probability, Range
from aelab.config.signatures import check_arguments
from aelab.data.cache import build_cache, decode_files, default_workers, file_key, scan_files
from aelab.data.datamodule import ImageDataModule, ImageSet
from aelab.errors import ConfigError, DataFileError, DatasetNotFoundError

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
ImageSize = Annotated[int, Range(ge=1)] | list[Annotated[int, Range(ge=1)]]


class ImageFile(NamedTuple):
    path: str  # where it is
    rel: str  # relative to the dataset's folder, "/"-separated
    size: int
    mtime_ns: int


def find_images(folder: Path, extensions: tuple[str, ...], root: Path | None = None) -> list[ImageFile]:
    """Image files below ``folder`` (recursively; hidden files and folders skipped), sorted, named relative to ``root``.

    One ``os.scandir`` walk and one ``stat`` per file: 60,000 files are listed in a fraction of a second.
    Symbolic links are followed; one that loops (to itself, or to a folder it lies in) is a DataFileError naming it.
    """
    root = root or folder
    base = os.path.relpath(folder, root)
    base = "" if base == "." else base.replace(os.sep, "/")
    out: list[ImageFile] = []
    top = os.stat(folder)
    stack: list[tuple[str, frozenset]] = [("", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        rel, above = stack.pop()
        with os.scandir(os.path.join(folder, rel) if rel else folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                name = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    is_dir = entry.is_dir()
                    inode = entry.stat() if is_dir and entry.is_symlink() else None
                except OSError as exc:  # ELOOP: links that point at each other
                    raise _link_error(entry.path, exc.strerror or str(exc)) from None
                if is_dir:
                    here = (inode.st_dev, inode.st_ino) if inode else (None, entry.inode())
                    if inode and here in above:
                        raise _link_error(entry.path, "it leads back to a folder it lies in")
                    stack.append((name, above | {here} if inode else above))
                elif os.path.splitext(entry.name)[1].lower() in extensions and entry.is_file():
                    st = entry.stat()
                    out.append(ImageFile(entry.path, f"{base}/{name}" if base else name, st.st_size, st.st_mtime_ns))
    out.sort(key=lambda f: f.rel)
    return out


class BadImagesError(ConfigError):
    """Image files that cannot be used; the advice depends on who reads them (training or ``aelab-predict``)."""

    TRAINING = (
        "fix or remove them, set data.image_size to resize differently sized images, "
        "or set data.skip_bad=true to leave them out"
    )

    def __init__(self, folder: Path, bad: list[tuple[str, str]], advice: str = TRAINING):
        self.folder, self.bad = folder, bad
        listed = "; ".join(f"{path} {why}" for path, why in bad[:3]) + (" ..." if len(bad) > 3 else "")
        super().__init__(
            f"{len(bad)} image file(s) under {folder} cannot be used: {listed}. {advice[0].upper()}{advice[1:]}"
        )

    def advising(self, advice: str) -> BadImagesError:
        """The same error with other advice."""
        return BadImagesError(self.folder, self.bad, advice)


def _link_error(path: str, why: str) -> DataFileError:
    return DataFileError(f"{path} is a symbolic link that loops ({why}): remove it, or point at a folder without it")


def default_cache_dir(path: Path) -> Path:
    """``<path>/.aelab-cache`` when the folder is writable, else ``~/.cache/aelab``."""
    import os

    if path.is_dir() and os.access(path, os.W_OK):
        return path / ".aelab-cache"
    return Path.home() / ".cache" / "aelab"


def as_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2:
        raise ConfigError(f"data.image_size must be one integer or [height, width] (got {image_size})")
    return size


def _mapped(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(array)


class ImageFolder(ImageDataModule):
    """A folder of image files as a dataset (see the module docstring).

    Args:
        path: the folder.
        image_size: resize every image to this (one integer or ``[height, width]``); null: the images'
            own size, which must then be the same for all.
        channels: 1 (grayscale) or 3 (RGB); null: the majority of the files, with a warning when they differ.
        test_fraction: share of the images held out as the test split when there is no ``test/`` folder.
        extensions: file suffixes taken as images.
        skip_bad: skip unreadable or truncated files (listed in the log and ``metrics.json``) instead of stopping.
        cache_dir: where decoded images are cached (null: ``<path>/.aelab-cache``, or ``~/.cache/aelab``
            when the folder is read-only).
        memory_budget_mb: a cache larger than this is memory-mapped instead of read into RAM.
        num_workers: decode processes (null: one per core).
        **kwargs: the options of :class:`~aelab.data.datamodule.ImageDataModule` (``val_fraction``, ...).
    """

    name = "folder"

    def __init__(
        self,
        path: str,
        image_size: ImageSize | None = None,
        channels: Literal[1, 3] | None = None,
        test_fraction: Probability = 0.1,
        extensions: list[str] = EXTENSIONS,
        skip_bad: bool = False,
        cache_dir: str | None = None,
        memory_budget_mb: NonNegativeFloat = 4096,
        num_workers: PositiveInt | None = None,
        **kwargs,
    ):
        check_arguments(ImageFolder, locals(), "data")
        kwargs.setdefault("val_fraction", 0.1)
        super().__init__(**kwargs)
        self.path = Path(str(path)).expanduser()
        self.size = as_size(image_size)
        self.channels = None if channels is None else int(channels)
        self.test_fraction = float(test_fraction)
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.skip_bad = bool(skip_bad)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(self.path)
        self.memory_budget_mb = float(memory_budget_mb)
        self.workers = int(num_workers or default_workers())

    def cache_key(self) -> tuple:
        return (
            str(self.path),
            self.size,
            self.channels,
            self.test_fraction,
            self.extensions,
            self.skip_bad,
            self.split_seed,
        )

    # ------------------------------------------------------------ the files
    def layout(self) -> dict[str, list[ImageFile]]:
        """The image files of each split found under ``path`` (``all`` when there are no split folders)."""
        if not self.path.is_dir():
            raise DatasetNotFoundError(f"data.path={self.path} is not a folder")
        found = {s: find_images(self.path / s, self.extensions, self.path) for s in SPLITS if (self.path / s).is_dir()}
        if "train" not in found:
            found = {"all": find_images(self.path, self.extensions)}
        if not any(found.values()):
            raise DatasetNotFoundError(
                f"no images found in {self.path} (searched recursively for {', '.join(self.extensions)}); "
                "point data.path at the folder that holds them, or set data.extensions"
            )
        return found

    def _labels(self, files: dict[str, list[ImageFile]]) -> tuple[list[str], dict[str, list[int]]]:
        """Class names from the first-level subfolders of each split folder (empty: unlabelled)."""
        parts = {s: [f.rel.split("/")[0 if s == "all" else 1 :] for f in group] for s, group in files.items()}
        if all(len(p) > 1 for group in parts.values() for p in group):
            names = sorted({p[0] for group in parts.values() for p in group})
            index = {n: i for i, n in enumerate(names)}
            return names, {s: [index[p[0]] for p in group] for s, group in parts.items()}
        return [], {s: [0] * len(group) for s, group in parts.items()}

    def _decide_shape(self, paths: list[str], headers: list) -> tuple[int, tuple[int, int]]:
        """Channels and (height, width) of the cache, from the settings or the files' headers."""
        good = [(p, h) for p, h in zip(paths, headers) if not isinstance(h, str)]
        if not good:
            raise ConfigError(
                f"none of the {len(paths)} image files under {self.path} can be read: {paths[0]}: {headers[0]}"
            )
        channels = self.channels
        if channels is None:
            counts = Counter(h[2] for _, h in good)
            channels = counts.most_common(1)[0][0]
            if len(counts) > 1:
                log.warning(
                    "the images under %s mix grayscale (%d) and colour (%d) files; all are converted to %d "
                    "channel(s) (set data.channels=1 or 3 to choose)",
                    self.path,
                    counts[1],
                    counts[3],
                    channels,
                )
        if self.size is not None:
            return channels, self.size
        sizes = Counter((h[1], h[0]) for _, h in good)
        if len(sizes) > 1:
            (first, _), (second, _) = sizes.most_common(2)
            a = next(p for p, h in good if (h[1], h[0]) == first)
            b = next(p for p, h in good if (h[1], h[0]) == second)
            raise ConfigError(
                f"the images under {self.path} differ in size: {a} is {first[1]}x{first[0]}, {b} is "
                f"{second[1]}x{second[0]} ({len(sizes)} sizes); set data.image_size=[height,width] to resize them"
            )
        return channels, next(iter(sizes))

    def decode(self, files: list[ImageFile], extra: dict) -> tuple[dict, np.ndarray]:
        """Decode ``files`` into the cache (or open the cache that holds them); returns its metadata and array."""
        settings = {"size": self.size, "channels": self.channels, "skip_bad": self.skip_bad, **extra}
        key = file_key(files, settings)
        paths = [f.path for f in files]
        stem = self.cache_dir / f"{self.path.name or 'images'}-{key}"

        def build(tmp: Path) -> dict:
            headers = scan_files(paths, self.workers)
            channels, size = self._decide_shape(paths, headers)
            bad = [(i, f"cannot be read ({h})") for i, h in enumerate(headers) if isinstance(h, str)]
            bad += decode_files(paths, tmp, (len(paths), channels, *size), self.size, size, self.workers)
            bad = sorted(dict(bad).items())
            if bad and not self.skip_bad:
                raise BadImagesError(self.path, [(paths[i], why) for i, why in bad])
            for i, why in bad:
                log.warning("skipped %s: %s", paths[i], why)
            return {
                "files": [f.rel for f in files],
                "bad": [i for i, _ in bad],
                "bad_files": [f"{files[i].rel}: {why}" for i, why in bad],
                "settings": settings,
            }

        log.info("reading %d image files under %s", len(paths), self.path)
        meta, array = build_cache(stem, build)
        meta["cache_file"] = str(stem.with_suffix(".npy"))
        return meta, array

    def _hold(self, array: np.ndarray) -> tuple[torch.Tensor, bool]:
        """The images in RAM, or memory-mapped when the cache is larger than the memory budget."""
        if array.nbytes / 2**20 > self.memory_budget_mb:
            return _mapped(array), True
        return torch.from_numpy(np.array(array)), False

    def read_all(self) -> tuple[torch.Tensor, list[str], list[int] | None, list[str]]:
        """Every image under ``path`` in file order, without splits (for prediction): images, relative file
        names, labels (None when unlabelled) and class names."""
        files = self.layout()
        class_names, labels = self._labels(files)
        paths = [p for s in files for p in files[s]]
        meta, array = self.decode(paths, {})
        return (
            torch.from_numpy(np.array(array)),
            meta["files"],
            [v for s in files for v in labels[s]] if class_names else None,
            class_names,
        )

    # ------------------------------------------------------------ the dataset
    def load(self) -> ImageSet:
        files = self.layout()
        class_names, labels = self._labels(files)
        order = list(files)
        paths = [p for s in order for p in files[s]]
        meta, array = self.decode(paths, {})
        bad = set(meta.get("bad", []))
        images, mapped = self._hold(array)
        all_labels = torch.tensor([label for s in order for label in labels[s]], dtype=torch.long)
        split_rows, start = {}, 0
        for s in order:
            rows = torch.arange(start, start + len(files[s]))
            split_rows[s] = rows[[int(r) not in bad for r in rows]] if bad else rows
            start += len(files[s])
        generator = torch.Generator().manual_seed(self.split_seed)
        if "all" in split_rows:  # no split folders: hold out a test split from the seed
            rows = split_rows.pop("all")
            rows = rows[torch.randperm(len(rows), generator=generator)]
            n_test = max(1, round(self.test_fraction * len(rows)))
            split_rows = {"train": rows[n_test:], "test": rows[:n_test]}
        if "test" not in split_rows:
            rows = split_rows["train"][torch.randperm(len(split_rows["train"]), generator=generator)]
            n_test = max(1, round(self.test_fraction * len(rows)))
            split_rows["train"], split_rows["test"] = rows[n_test:], rows[:n_test]
        info = {
            "path": str(self.path),
            "cache_file": meta["cache_file"],
            "files": len(paths),
            "skipped_files": meta.get("bad_files", []),
        }
        return self._image_set(
            images, all_labels, split_rows, class_names or ["image"], mapped, info, has_labels=bool(class_names)
        )

    def _image_set(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        rows: dict[str, torch.Tensor],
        class_names: list[str],
        mapped: bool,
        info: dict,
        test_masks: torch.Tensor | None = None,
        has_labels: bool = True,
    ) -> ImageSet:
        """An ImageSet whose splits are rows of one array (gathered now when in RAM, per batch when mapped)."""
        pick = (lambda r: images) if mapped else (lambda r: images[r])
        val = rows.get("val")
        return ImageSet(
            train_images=pick(rows["train"]),
            train_labels=labels[rows["train"]],
            test_images=pick(rows["test"]),
            test_labels=labels[rows["test"]],
            val_images=None if val is None else pick(val),
            val_labels=None if val is None else labels[val],
            class_names=list(class_names),
            origin=f"{self.name} {self.path}",
            test_masks=test_masks,
            mapped=mapped,
            train_rows=rows["train"] if mapped else None,
            test_rows=rows["test"] if mapped else None,
            val_rows=val if mapped else None,
            info=info,
            has_labels=has_labels,
        )


class AnomalyFolder(ImageFolder):
    """An MVTec AD-style anomaly set: ``train/good``, ``test/good``, ``test/<defect>``,
    ``ground_truth/<defect>/<name>_mask.png``.

    Training (and validation, ``data.val_fraction`` of ``train/good``) sees good images only; the
    test split holds every test image with its defect type as the label (0 = good) and, where
    ``ground_truth/`` has them, per-pixel masks (resized like the images, nearest neighbour).

    Args:
        require_masks: a defect image without a mask is an error (else it gets no pixel-level score).
        **kwargs: the options of :class:`ImageFolder`.
    """

    name = "anomaly_folder"
    normal_label = 0

    def __init__(self, require_masks: bool = True, **kwargs):
        check_arguments(AnomalyFolder, locals(), "data")
        super().__init__(**kwargs)
        self.require_masks = bool(require_masks)

    def load(self) -> ImageSet:
        train_dir, test_dir, truth_dir = self.path / "train" / "good", self.path / "test", self.path / "ground_truth"
        if not train_dir.is_dir() or not test_dir.is_dir():
            raise DatasetNotFoundError(
                f"{self.path} is not laid out like MVTec AD: it needs train/good/ and test/<good|defect>/ folders"
            )
        train = find_images(train_dir, self.extensions, self.path)
        defects = sorted(d.name for d in test_dir.iterdir() if d.is_dir() and d.name != "good")
        class_names = ["good", *defects]
        test = (
            [(p, 0) for p in find_images(test_dir / "good", self.extensions, self.path)]
            if (test_dir / "good").is_dir()
            else []
        )
        for i, d in enumerate(defects, start=1):
            test += [(p, i) for p in find_images(test_dir / d, self.extensions, self.path)]
        if not train or not test:
            raise DatasetNotFoundError(
                f"no images in {train_dir if not train else test_dir} (searched for {', '.join(self.extensions)})"
            )
        n_defect = sum(1 for _, label in test if label > 0)
        if n_defect and self.require_masks and not truth_dir.is_dir():
            raise DatasetNotFoundError(
                f"{self.path} has no ground_truth/ folder, and data.require_masks=true (the default) needs a mask for "
                f"each of its {n_defect} defect images: add ground_truth/<defect>/<name>_mask.png files, or set "
                "data.require_masks=false to score them at image level only (no pixel metrics)"
            )
        masks = self._mask_files(test, class_names, truth_dir) if truth_dir.is_dir() else None
        paths = train + [p for p, _ in test]
        meta, array = self.decode(paths, {"layout": "mvtec"})
        if meta.get("bad"):
            keep = set(range(len(paths))) - set(meta["bad"])
        else:
            keep = None
        images, mapped = self._hold(array)
        labels = torch.tensor([0] * len(train) + [label for _, label in test], dtype=torch.long)
        rows_train, rows_test = torch.arange(len(train)), torch.arange(len(train), len(paths))
        if keep is not None:
            rows_train = rows_train[[int(r) in keep for r in rows_train]]
            rows_test = rows_test[[int(r) in keep for r in rows_test]]
        test_masks = None
        if masks is not None:
            test_masks = self._decode_masks(masks, (array.shape[2], array.shape[3]))
            test_masks = test_masks[rows_test - len(train)]
        info = {
            "path": str(self.path),
            "cache_file": meta["cache_file"],
            "files": len(paths),
            "defect_types": defects,
            "masks": test_masks is not None,
            "skipped_files": meta.get("bad_files", []),
        }
        return self._image_set(
            images, labels, {"train": rows_train, "test": rows_test}, class_names, mapped, info, test_masks
        )

    def _mask_files(
        self, test: list[tuple[ImageFile, int]], class_names: list[str], truth_dir: Path
    ) -> list[Path | None]:
        out, missing = [], []
        for image, label in test:
            if label == 0:
                out.append(None)
                continue
            path = Path(image.path)
            candidates = [truth_dir / class_names[label] / f"{path.stem}_mask{ext}" for ext in (path.suffix, ".png")]
            mask = next((c for c in candidates if c.is_file()), None)
            if mask is None:
                missing.append(candidates[-1])
            out.append(mask)
        if missing and self.require_masks:
            raise DatasetNotFoundError(
                f"{len(missing)} defect image(s) have no mask, e.g. {missing[0]} is missing; add the masks, "
                "or set data.require_masks=false to score those images at image level only"
            )
        return out

    def _decode_masks(self, masks: list[Path | None], size: tuple[int, int]) -> torch.Tensor:
        """The masks as uint8 ``[N, 1, H, W]`` (1 = anomalous pixel), checked against their images' sizes."""
        from PIL import Image

        out = np.zeros((len(masks), 1, *size), dtype=np.uint8)
        for i, path in enumerate(masks):
            if path is None:
                continue
            try:
                with Image.open(path) as image:
                    mask = image.convert("L")
                    if self.size is None and (mask.height, mask.width) != size:
                        raise ConfigError(f"mask {path} is {mask.width}x{mask.height}, its image {size[1]}x{size[0]}")
                    mask = mask.resize((size[1], size[0]), Image.NEAREST)
                    out[i, 0] = np.asarray(mask) > 127
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 — any mask Pillow cannot read is named in one line
                raise ConfigError(f"mask {path} cannot be read ({type(exc).__name__}: {exc})") from None
        return torch.from_numpy(out)
