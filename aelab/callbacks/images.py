"""Saving image grids as PNG and sending them to every image-capable logger."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Stack equally long rows of images ``[n, C, H, W]`` into one grid ``[3, H', W']`` in [0, 1]."""
    n = rows[0].shape[0]
    images = torch.cat([r.detach().float().clamp(0, 1).cpu() for r in rows])
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return make_grid(images, nrow=n, padding=pad, pad_value=0.5)


def publish_image(grid: torch.Tensor, path: str | Path | None, key: str, loggers: list[Logger], step: int, caption: str = "") -> None:
    """Save ``grid`` to ``path`` (PNG) and log it under ``key`` to W&B and TensorBoard loggers."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, str(path))
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            logger.log_image(key=key, images=[array], step=step, caption=[caption] if caption else None)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=step)
