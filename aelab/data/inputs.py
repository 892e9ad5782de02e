"""What a trained run takes as input, and turning new inputs — files, arrays, tensors — into it.

:class:`InputSpec` is the one place that knows a run's preprocessing: the
shape its model expects (``(C, H, W)`` images or ``(D,)`` vectors) and how raw
values become model inputs (uint8 pixels / 255; floats as they are; the
training split's min-max scaling of an ``arrays`` run). ``aelab-predict``,
``aelab-export`` (its JSON) and the Python API (``run.encode(x)``) all use it.

:func:`read_input` reads what ``aelab-predict input=`` names: a folder of
image files (decoded and resized like the run's training images), an array
file, or a dataset of the ``data`` config group (its test split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.errors import ConfigError, DatasetNotFoundError


@dataclass
class InputSpec:
    """The input contract of a trained run (see the module docstring)."""

    shape: tuple[int, ...]
    scaling: str = "auto"  # auto: uint8 / 255, floats as they are | minmax | none
    minmax: tuple[Any, Any] | None = None  # the training split's (min, max), per feature for vectors

    @property
    def is_images(self) -> bool:
        return len(self.shape) == 3

    @classmethod
    def of_run(cls, cfg, dims, dataset_info: dict | None) -> InputSpec:
        scaling = str((cfg.get("data") or {}).get("normalize", "auto"))
        stats = (dataset_info or {}).get("minmax")
        minmax = (np.asarray(stats["lo"], np.float32), np.asarray(stats["hi"], np.float32)) if stats else None
        return cls(tuple(int(s) for s in dims), scaling, minmax)

    def describe(self) -> dict:
        """The preprocessing in words and numbers (for the export's JSON)."""
        if self.is_images:
            c, h, w = self.shape
            layout = f"float32 [N, {c}, {h}, {w}], {'grayscale' if c == 1 else 'RGB'} images resized to {h}x{w}"
        else:
            layout = f"float32 [N, {self.shape[0]}] vectors"
        values = {
            "auto": "uint8 pixels divided by 255 (floats in [0, 1] as they are)",
            "minmax": "(x - min) / (max - min) with the training split's min and max",
            "none": "values as they are",
        }[self.scaling]
        out = {"input": layout, "values": values, "shape": list(self.shape)}
        if self.minmax is not None:
            out["min"], out["max"] = np.asarray(self.minmax[0]).tolist(), np.asarray(self.minmax[1]).tolist()
        return out

    def prepare(self, x: Any) -> torch.Tensor:
        """Raw inputs (NumPy or torch; uint8 or float; images ``[N,H,W]``, ``[N,H,W,C]`` or ``[N,C,H,W]``, or vectors
        ``[N,D]``; a single input without the batch dimension too) as the float batch the model takes."""
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if self.is_images:
            t = self._images(t)
        else:
            if t.dim() == 1:
                t = t[None]
            if t.dim() != 2 or t.shape[1] != self.shape[0]:
                raise ConfigError(
                    f"this run takes vectors of {self.shape[0]} values, [N, {self.shape[0]}]; got an input of shape "
                    f"{tuple(t.shape)}"
                )
        values = t.float().div(255.0) if t.dtype == torch.uint8 else t.float()
        if self.scaling == "minmax" and self.minmax is not None and t.dtype != torch.uint8:
            lo, hi = (torch.as_tensor(v, dtype=torch.float32) for v in self.minmax)
            values = (values - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        return values

    def _images(self, t: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        if t.dim() == 2 and tuple(t.shape) != (h, w):
            raise ConfigError(
                f"this run takes images [N, {c}, {h}, {w}] (or [N, H, W], [N, H, W, C]); got an input of shape "
                f"{tuple(t.shape)} (vectors go to a model trained on vectors)"
            )
        if t.dim() == 2 or (t.dim() == 3 and tuple(t.shape) == tuple(self.shape)):
            t = t[None]  # one image
        if t.dim() == 3:
            t = t[:, None]  # [N, H, W]
        if t.dim() != 4:
            raise ConfigError(
                f"this run takes images [N, {c}, {h}, {w}] (or [N, H, W, C]); got an input of shape {tuple(t.shape)}"
            )
        if t.shape[1] not in (1, 3) and t.shape[3] in (1, 3):
            t = t.permute(0, 3, 1, 2)  # channels last
        if t.shape[1] not in (1, 3):
            raise ConfigError(
                f"this run takes images with 1 or 3 channels, [N, {c}, {h}, {w}]; "
                f"got an input of shape {tuple(t.shape)}"
            )
        if t.shape[1] != c:  # grayscale <-> RGB, as Pillow converts
            weights = torch.tensor([0.299, 0.587, 0.114])
            t = (
                t.float().mul(weights[None, :, None, None]).sum(1, keepdim=True).round().to(t.dtype)
                if c == 1
                else t.expand(-1, 3, -1, -1)
            )
        if tuple(t.shape[2:]) != (h, w):
            dtype = t.dtype
            t = torch.nn.functional.interpolate(
                t.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False
            )
            t = t.round().clamp(0, 255).to(torch.uint8) if dtype == torch.uint8 else t
        return t


@dataclass
class InputSet:
    """Raw inputs read for prediction, with where each row came from."""

    values: torch.Tensor  # uint8 or float, in the run's shape (folders) or as stored (arrays)
    sources: list[str]  # file name, array row or dataset id
    labels: list[int] | None = None
    class_names: list[str] = field(default_factory=list)
    name: str = "input"


def read_input(
    source: str, spec: InputSpec, split: str = "test", seed: int = 0, own: tuple[str, Any] | None = None
) -> InputSet:
    """Read ``source``: a folder of images, an array file, or the name of a dataset in the ``data`` group.

    ``own`` is ``(name, DataModule)`` of the run's training data: that name means the run's own
    splits, with every option it was trained with.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        from aelab.data import ImageFolder

        if not spec.is_images:
            raise ConfigError(f"this run takes vectors of {spec.shape[0]} values; {path} is a folder of images")
        from aelab.data.folder import BadImagesError

        c, h, w = spec.shape
        folder = ImageFolder(path=str(path), image_size=[h, w], channels=c)
        try:
            images, files, labels, classes = folder.read_all()
        except BadImagesError as exc:  # predict reads every file it is given: no data.skip_bad here
            raise exc.advising(
                f"fix or replace them, or move them out of input={source}: aelab-predict writes one row per file"
            ) from None
        return InputSet(images, files, labels, classes, path.name)
    if path.suffix in (".npy", ".npz", ".pt", ".pth"):
        from aelab.data.arrays import read_array_file, to_layout

        x, y = read_array_file(path, "x", "y")
        x = to_layout(np.asarray(x), "auto", path) if x.ndim == 4 or not spec.is_images else np.asarray(x)
        return InputSet(
            torch.from_numpy(np.ascontiguousarray(x)),
            [f"{path.name}[{i}]" for i in range(len(x))],
            None if y is None else [int(v) for v in np.asarray(y).reshape(-1)],
            [],
            path.stem,
        )
    if "/" in source or path.suffix:
        raise DatasetNotFoundError(
            f"input={source} does not exist (a folder of images, an .npy/.npz/.pt file, or a dataset name)"
        )
    if own is not None and own[0] == source:
        return _split_of(own[1], source, split)
    return _read_dataset(source, split, seed)


def _split_of(dm, name: str, split: str) -> InputSet:
    dm.setup()
    if split not in dm.splits:
        raise ConfigError(f"split={split} is not one of {sorted(dm.splits)}")
    part = dm.splits[split]
    return InputSet(
        part.materialized(), [str(int(i)) for i in part.ids], part.labels.tolist(), list(dm.class_names), name
    )


def _read_dataset(name: str, split: str, seed: int) -> InputSet:
    """The ``split`` of dataset ``name`` from the ``data`` config group (e.g. ``fashion_mnist``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException
    from hydra.utils import instantiate

    from aelab import config_dir

    overrides = [f"data={name}", f"seed={seed}"]
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config_name="config", overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
    except MissingConfigException:
        raise DatasetNotFoundError(
            f"input={name} is neither a folder, an array file nor a dataset of the data group"
        ) from None
    return _split_of(instantiate(cfg.data, _convert_="all"), name, split)
