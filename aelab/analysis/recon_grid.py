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
    if not first.data.is_images or first.model.value_range != "unit":
        what = "vectors" if not first.data.is_images else "real-valued images"
        raise RunFolderError(f"{run_dirs[0].name} was trained on {what}: there is no picture of them to draw")
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
        rows.append(run.model.in_range(x_hat).cpu())
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
    height = images.shape[-2]
    pad = max(2, height // 14)
    grid = make_grid(torch.cat(all_rows).float().clamp(0, 1), nrow=n, padding=pad, pad_value=1.0)
    image = grid.permute(1, 2, 0).numpy()
    row = 0.62  # inches per row of images; the width follows from the images' aspect, plus the row labels
    label = 0.09 * max(len(name) for name in names) + 0.3
    fig, axes = style.figure(
        1,
        1,
        panel=(
            row * len(all_rows) * image.shape[1] / image.shape[0] + label,
            row * len(all_rows) + 0.35 + 0.25 * bool(title),
        ),
    )
    ax = axes[0, 0]
    ax.imshow(image[..., 0] if images.shape[1] == 1 else image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * (height + pad) + height / 2 for r in range(len(all_rows))], names)
    ax.tick_params(axis="y", length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title)
    style.note(fig, note)
    return style.save(fig, out_path, trim=True)
