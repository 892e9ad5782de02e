"""Image grids: the one helper that lays images out, saves them as PNG and sends them to image-capable loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch

from aelab.files import atomic_path


def image_grid(images: torch.Tensor | Sequence[torch.Tensor], nrow: int | None = None, pad: int = 2) -> torch.Tensor:
    """A grid ``[3, H', W']`` in [0, 1]: ``images`` ``[n, C, H, W]`` with ``nrow`` per row, or a list of equally long rows."""
    from torchvision.utils import make_grid

    if not isinstance(images, torch.Tensor):
        rows = [r.detach().float().cpu() for r in images]
        nrow = rows[0].shape[0]
        if any(r.shape[1] == 3 for r in rows):  # grayscale rows next to colour ones (heat maps) become grey RGB
            rows = [r.expand(-1, 3, -1, -1) for r in rows]
        images = torch.cat(rows)
    images = images.detach().float().clamp(0, 1).cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return make_grid(images, nrow=nrow or 8, padding=pad, pad_value=0.5)


def save_png(grid: torch.Tensor, path: str | Path) -> Path:
    """Write a grid as PNG, atomically."""
    from torchvision.utils import save_image

    path = Path(path)
    with atomic_path(path) as tmp:
        save_image(grid, str(tmp))
    return path


def publish_image(grid: torch.Tensor, path: str | Path | None, key: str, loggers: Iterable, step: int, caption: str = "") -> None:
    """Save ``grid`` to ``path`` (PNG) and log it under ``key`` to W&B and TensorBoard loggers."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if path is not None:
        save_png(grid, path)
    for logger in loggers or ():
        if isinstance(logger, WandbLogger):
            array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            logger.log_image(key=key, images=[array], step=step, caption=[caption] if caption else None)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=step)
