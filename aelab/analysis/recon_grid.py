"""Reconstructions of the same test images by several runs, one row per run."""

from __future__ import annotations

from pathlib import Path

import torch

from aelab.analysis import style
from aelab.errors import RunFolderError
from aelab.run.load import load_run


@torch.no_grad()
def reconstruction_rows(run_dirs: list[Path], num_images: int = 10) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The first ``num_images`` test images (from the first run's data) and each run's reconstruction.

    Inputs are corrupted as each run evaluates them (its fixed test corruption).
    """
    first = load_run(run_dirs[0])
    images = first.data.images("test", limit=num_images)
    rows = []
    for run_dir in run_dirs:
        run = first if run_dir == run_dirs[0] else load_run(run_dir, setup_data=False)
        shape = tuple(getattr(run.model, "input_shape", images.shape[1:]))
        if shape != tuple(images.shape[1:]):
            raise RunFolderError(
                f"the runs take inputs of different shapes ({tuple(images.shape[1:])} in {run_dirs[0].name}, "
                f"{shape} in {run_dir.name}): their reconstructions cannot share a grid"
            )
        _, _, x_hat = run.model.per_sample_metrics(images, run.model.eval_generator())
        rows.append(x_hat.clamp(0, 1).cpu())
    return images, rows


@style.styled
def reconstruction_figure(
    run_dirs: list[Path],
    labels: list[str],
    out_path: Path,
    num_images: int = 10,
    title: str = "",
    note: str = "",
) -> Path:
    """A labelled grid: the test images on top, then one row of reconstructions per run (PNG and PDF)."""
    from torchvision.utils import make_grid

    images, rows = reconstruction_rows(run_dirs, num_images)
    all_rows = [images] + rows
    names = ["test images"] + labels
    n = images.shape[0]
    height, width = images.shape[-2:]
    row = 0.66  # inches per row of images; the width follows from the images' aspect, plus the row labels
    fig, axes = style.figure(
        len(all_rows), 1, panel=(row * n * (width + 2) / (height + 2) + 1.5, row), layout="compressed"
    )
    for ax, row, name in zip(axes[:, 0], all_rows, names):
        strip = make_grid(row.float().clamp(0, 1), nrow=n, padding=2, pad_value=1.0)
        image = strip.permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if row.shape[1] == 1 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    style.note(fig, note)
    return style.save(fig, out_path)
