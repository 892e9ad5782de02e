"""Image grids: the one helper that lays images out, saves them as PNG and sends them to image-capable loggers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from aelab.store.files import atomic_path

#: images smaller than this (pixels, the longer side) are enlarged (nearest neighbour) so a person can see them
MIN_SIDE = 64


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    nrow: int | None = None,
    pad: int = 2,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    min_side: int = MIN_SIDE,
) -> torch.Tensor:
    """A grid ``[3, H', W']`` in [0, 1] of ``images`` ``[n, C, H, W]`` (``nrow`` per row), or of equally long rows.

    Small images are enlarged by a whole factor (nearest neighbour: pixels stay sharp) to at least
    ``min_side``; ``row_labels`` are written left of the rows and ``title`` above them.
    """
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
    factor = -(-min_side // max(images.shape[-2:])) if min_side else 1
    if factor > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    grid = make_grid(images, nrow=nrow or 8, padding=pad, pad_value=0.5)
    if row_labels or title:
        grid = _annotate(grid, images.shape[-2] + pad, pad, list(row_labels or []), title)
    return grid


def _annotate(grid: torch.Tensor, row_height: int, pad: int, labels: list[str], title: str | None) -> torch.Tensor:
    """The grid with a white margin: ``labels`` left of the rows, ``title`` above."""
    import numpy as np
    from PIL import Image, ImageDraw

    font = _font(max(10, min(16, row_height // 4)))
    image = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    left = max((int(draw.textlength(label, font=font)) for label in labels), default=0) + (12 if labels else 0)
    lines = _wrap(title, font, draw, image.width + left - 8) if title else []
    line_height = font.size + 4
    top = line_height * len(lines) + 6 if lines else 0
    canvas = Image.new("RGB", (image.width + left, image.height + top), "white")
    canvas.paste(image, (left, top))
    draw = ImageDraw.Draw(canvas)
    fits = all(draw.textlength(line, font=font) <= image.width - pad for line in lines)
    x = left + pad if fits else 6  # above the images when it fits there, else across the whole width
    for i, line in enumerate(lines):  # a long title wraps to the grid's width instead of running off it
        draw.text((x, 4 + i * line_height), line, fill="black", font=font)
    for i, label in enumerate(labels):
        y = top + pad + i * row_height + (row_height - pad - font.size) // 2
        draw.text((6, y), label, fill="black", font=font)
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float() / 255


def _wrap(text: str, font, draw, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels (at word boundaries)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _font(size: int):
    """The house font (DejaVu Sans, as in every aelab figure; it has σ, β, ±) at ``size`` pixels."""
    import matplotlib
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:  # a matplotlib without its bundled fonts: PIL's own
        return ImageFont.load_default(size=size)


def save_png(grid: torch.Tensor, path: str | Path) -> Path:
    """Write a grid as PNG, atomically."""
    from torchvision.utils import save_image

    path = Path(path)
    with atomic_path(path) as tmp:
        save_image(grid, str(tmp))
    return path


def publish_image(
    grid: torch.Tensor, path: str | Path | None, key: str, loggers: Iterable, step: int, caption: str = ""
) -> None:
    """Save ``grid`` to ``path`` (PNG) and log it under ``key`` to the image-taking loggers (W&B, MLflow, "
    "TensorBoard)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if path is not None:
        save_png(grid, path)
    for logger in loggers or ():
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=step)
        elif hasattr(logger, "log_image"):  # W&B and MLflow: (key, images, step, caption)
            array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            logger.log_image(key=key, images=[array], step=step, caption=[caption] if caption else None)
