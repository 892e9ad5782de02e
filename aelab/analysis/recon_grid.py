"""Reconstructions of the same test images by several runs, one row per run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from aelab.errors import RunFolderError  # noqa: E402
from aelab.run.load import load_run  # noqa: E402
from aelab.store.files import save_figure  # noqa: E402


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


def reconstruction_figure(
    run_dirs: list[Path], labels: list[str], out_path: Path, num_images: int = 10, title: str = ""
) -> Path:
    """A labelled grid: the test images on top, then one row of reconstructions per run."""
    images, rows = reconstruction_rows(run_dirs, num_images)
    all_rows = [images] + rows
    names = ["test images"] + labels
    n = images.shape[0]
    fig, axes = plt.subplots(len(all_rows), n, figsize=(n * 0.8 + 1.6, len(all_rows) * 0.85 + 0.3), squeeze=False)
    for r, (row, name) in enumerate(zip(all_rows, names)):
        for c in range(n):
            ax = axes[r, c]
            img = row[c].permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.96) if title else None)
    save_figure(fig, out_path)
    return out_path
