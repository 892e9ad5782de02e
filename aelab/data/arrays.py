"""Your own arrays: an ``.npy``, ``.npz`` or ``.pt`` file of images or vectors (``data=arrays``).

Images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (``data.layout``
tells the last two apart when the shape cannot), uint8 or float in [0, 1];
vectors ``(N, D)`` — tabular data — for the MLP and linear autoencoders.
Labels come from ``y`` in an ``.npz`` / a ``.pt`` dict (optional). Floats
outside [0, 1] need ``data.normalize``: ``minmax`` rescales each feature
(vectors) or the whole image range (images) by the training split's minimum
and maximum; ``none`` takes the values as they are, real numbers (pair it with
``model.output_activation=identity``: nothing is clamped to [0, 1]). The test split is ``data.test_path`` or
``data.test_fraction`` of the rows (drawn from ``data.split_seed``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from aelab.config.constraints import Probability
from aelab.config.signatures import check_arguments
from aelab.data.datamodule import ImageDataModule, ImageSet
from aelab.errors import ConfigError, DatasetNotFoundError

SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def read_array_file(path: Path, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y or None)`` from an ``.npy`` / ``.npz`` / ``.pt`` file; one clear error naming the file for any fault."""
    if not path.is_file():
        raise DatasetNotFoundError(f"data.path={path} does not exist")
    if path.suffix not in SUFFIXES:
        raise ConfigError(f"{path}: unknown array file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if x_key not in archive.files:
                    raise ConfigError(f"{path} holds the arrays {archive.files}, not {x_key!r}; set data.x_key")
                return archive[x_key], (archive[y_key] if y_key in archive.files else None)
        data = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 — truncated, garbage, pickled objects, permissions
        raise ConfigError(
            f"{path} cannot be read as {path.suffix} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if isinstance(data, torch.Tensor):
        return data.numpy(), None
    if isinstance(data, dict) and x_key in data:
        y = data.get(y_key)
        return np.asarray(data[x_key]), (None if y is None else np.asarray(y))
    raise ConfigError(
        f"{path} holds a {type(data).__name__}; expected a tensor or a dict with {x_key!r} (and optionally {y_key!r})"
    )


def to_layout(x: np.ndarray, layout: str, path: Path) -> np.ndarray:
    """Images as ``(N, C, H, W)``, vectors as ``(N, D)``."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise ConfigError(
            f"{path}: an array of shape {tuple(x.shape)} is neither vectors (N, D) nor images "
            "(N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if layout == "auto":
        channels_first, channels_last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if channels_first == channels_last:
            raise ConfigError(
                f"{path}: cannot tell the channels of shape {tuple(x.shape)}; set data.layout=nchw or nhwc"
            )
        layout = "nchw" if channels_first else "nhwc"
    x = x.transpose(0, 3, 1, 2) if layout == "nhwc" else x
    if x.shape[1] not in (1, 3):
        raise ConfigError(
            f"{path}: images with {x.shape[1]} channels; aelab takes 1 (grayscale) or 3 (RGB) (data.layout={layout})"
        )
    return np.ascontiguousarray(x)


class ArrayFile(ImageDataModule):
    """Images or vectors from an array file (see the module docstring).

    Args:
        path: the ``.npy``, ``.npz`` or ``.pt`` file of the training rows (and of the test rows
            unless ``test_path`` is given).
        test_path: an array file of the test rows (same layout).
        x_key, y_key: the arrays' names in an ``.npz`` or a ``.pt`` dict.
        layout: ``auto``, ``nchw`` or ``nhwc`` for 4-dimensional arrays.
        normalize: ``auto`` (uint8 → [0, 1]; floats must lie in [0, 1]), ``minmax``, or ``none``.
        test_fraction: share of the rows held out for testing when there is no ``test_path``.
        **kwargs: the options of :class:`~aelab.data.datamodule.ImageDataModule` (``val_fraction``, ...).
    """

    name = "arrays"
    #: ``normalize=none`` takes the values as they are: real numbers (the early config check reads this too)
    value_range_when = {"normalize": {"none": "real"}}

    def __init__(
        self,
        path: str,
        test_path: str | None = None,
        x_key: str = "x",
        y_key: str = "y",
        layout: Literal["auto", "nchw", "nhwc"] = "auto",
        normalize: Literal["auto", "minmax", "none"] = "auto",
        test_fraction: Probability = 0.2,
        **kwargs,
    ):
        check_arguments(ArrayFile, locals(), "data")
        kwargs.setdefault("val_fraction", 0.1)
        super().__init__(**kwargs)
        self.path = Path(str(path)).expanduser()
        self.test_path = Path(str(test_path)).expanduser() if test_path else None
        self.x_key, self.y_key, self.layout, self.normalize = x_key, y_key, layout, normalize
        self.test_fraction = float(test_fraction)

    def cache_key(self) -> tuple:
        def stamp(p):
            return None if p is None or not p.exists() else (str(p), p.stat().st_size, p.stat().st_mtime_ns)

        return (
            stamp(self.path),
            stamp(self.test_path),
            self.x_key,
            self.y_key,
            self.layout,
            self.normalize,
            self.test_fraction,
            self.split_seed,
        )

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        x, y = read_array_file(path, self.x_key, self.y_key)
        x = to_layout(np.asarray(x), self.layout, path)
        if x.shape[0] < 2:
            raise ConfigError(f"{path} holds {x.shape[0]} row(s); a dataset needs at least a few")
        if x.dtype.kind not in "fiub":  # complex, strings, objects: no silent cast to float32
            raise ConfigError(
                f"{path}: {self.x_key} holds {x.dtype} values; aelab takes real numbers (float or integer): "
                + ("split complex values into real and imaginary features" if x.dtype.kind == "c" else "convert them")
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
            raise ConfigError(
                f"{path} holds NaN or inf values in {int(bad.sum())} row(s) (the first: row {int(np.argmax(bad))}); "
                "remove or impute them"
            )
        if y is not None:
            y = np.asarray(y).reshape(-1)
            if len(y) != len(x):
                raise ConfigError(f"{path}: {len(y)} labels ({self.y_key}) for {len(x)} rows ({self.x_key})")
            if y.dtype.kind not in "iub":
                raise ConfigError(f"{path}: labels {self.y_key} must be integers (got {y.dtype})")
        return x, y

    def _scale(self, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images stay uint8; other values become float32, scaled as ``normalize`` says."""
        if train.dtype == np.uint8 and test.dtype == np.uint8:
            return train, test
        train, test = train.astype(np.float32), test.astype(np.float32)
        if self.normalize == "minmax":
            axis = 0 if train.ndim == 2 else None  # per feature for vectors, over all pixels for images
            lo, hi = train.min(axis=axis), train.max(axis=axis)
            self._minmax = {
                "lo": np.asarray(lo).tolist(),
                "hi": np.asarray(hi).tolist(),
            }  # recorded: predictions scale alike
            span = np.where(hi > lo, hi - lo, 1.0)
            return (train - lo) / span, (
                test - lo
            ) / span  # test values may leave [0, 1]: that is what an anomaly looks like
        if self.normalize == "auto":
            lo, hi = float(min(train.min(), test.min())), float(max(train.max(), test.max()))
            if lo < 0 or hi > 1:
                raise ConfigError(
                    f"{self.path}: the values span [{lo:g}, {hi:g}], not [0, 1]; set data.normalize=minmax (rescale "
                    "by the training split's minimum and maximum, per feature for vectors) or data.normalize=none (use "
                    "them as they are, with model.output_activation=identity)"
                )
        return train, test

    def load(self) -> ImageSet:
        x, y = self._read(self.path)
        generator = torch.Generator().manual_seed(self.split_seed)
        if self.test_path is not None:
            test_x, test_y = self._read(self.test_path)
            if test_x.shape[1:] != x.shape[1:]:
                raise ConfigError(
                    f"{self.test_path} rows have shape {test_x.shape[1:]}, {self.path} rows {x.shape[1:]}"
                )
            if (y is None) != (test_y is None):
                raise ConfigError(f"labels ({self.y_key}) are in one of {self.path} and {self.test_path}, not both")
        else:
            order = torch.randperm(len(x), generator=generator).numpy()
            n_test = max(1, round(self.test_fraction * len(x)))
            test_x, x = x[order[:n_test]], x[order[n_test:]]
            test_y, y = (None, None) if y is None else (y[order[:n_test]], y[order[n_test:]])
        self._minmax = None
        x, test_x = self._scale(x, test_x)

        def labels(v, n):
            return torch.zeros(n, dtype=torch.long) if v is None else torch.from_numpy(v.astype(np.int64))

        train_labels, test_labels = labels(y, len(x)), labels(test_y, len(test_x))
        n_classes = int(max(train_labels.max(), test_labels.max())) + 1
        kind = "vectors" if x.ndim == 2 else "images"
        return ImageSet(
            train_images=torch.from_numpy(np.ascontiguousarray(x)),
            train_labels=train_labels,
            test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
            test_labels=test_labels,
            class_names=[str(i) for i in range(n_classes)] if y is not None else ["row"],
            has_labels=y is not None,
            origin=f"{kind} from {self.path}" + (f" and {self.test_path}" if self.test_path else ""),
            info={
                "path": str(self.path),
                "test_path": str(self.test_path) if self.test_path else None,
                "kind": kind,
                "normalize": self.normalize,
                **({"minmax": self._minmax} if self._minmax else {}),
            },
        )
