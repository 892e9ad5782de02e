"""After testing: samples, interpolations and (VAEs) latent traversals as PNG grids and logged images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from aelab.callbacks.images import publish_image
from aelab.data.datamodule import to_float_batch
from aelab.evaluation.generation import (
    encode_loader,
    fitted_gaussian_samples,
    interpolation_rows,
    prior_samples,
    traversal_rows,
)


def _grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    images = images.float().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return make_grid(images, nrow=nrow, padding=2, pad_value=0.5)


class GenerationGrids(L.Callback):
    """Write ``samples/{samples,interpolation,traversal}.png`` with the tested weights.

    Args:
        dirpath: where the PNGs go (``<run>/samples``).
        num_samples: generated images (8 per row).
        num_pairs, steps: interpolation rows and decoded points per row.
        traversal_dims, traversal_span, traversal_steps: VAE traversals — how many
            dimensions (highest KL first), the range in prior standard deviations, points per row.
        fit_codes: training images whose codes the deterministic AE's Gaussian is fitted to.
    """

    def __init__(self, dirpath: str | Path, num_samples: int = 64, num_pairs: int = 6, steps: int = 10,
                 traversal_dims: int = 10, traversal_span: float = 3.0, traversal_steps: int = 9, fit_codes: int = 5000):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.num_samples, self.num_pairs, self.steps = num_samples, num_pairs, steps
        self.traversal_dims, self.traversal_span, self.traversal_steps = traversal_dims, traversal_span, traversal_steps
        self.fit_codes = fit_codes
        self.written: dict[str, Path] = {}

    @rank_zero_only
    def on_test_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "split_dataloader"):
            return
        self.written = write_generation(pl_module, dm, self.dirpath, trainer.loggers, trainer.global_step, self)


def write_generation(model, datamodule, dirpath: Path, loggers=(), step: int = 0, options: GenerationGrids | None = None) -> dict[str, Path]:
    """Draw the generation grids of ``model`` into ``dirpath``; returns the files written."""
    o = options or GenerationGrids(dirpath)
    was_training = model.training
    model.eval()
    written: dict[str, Path] = {}
    try:
        with torch.no_grad():
            batch = next(iter(datamodule.split_dataloader("test", limit=2 * o.num_pairs)))
            images = to_float_batch(batch)["image"]
            if hasattr(model, "sample_prior"):
                samples, how = prior_samples(model, o.num_samples), "samples from the prior N(0, I)"
            else:
                codes, _ = encode_loader(model, datamodule.split_dataloader("train", limit=o.fit_codes), o.fit_codes)
                samples, how = fitted_gaussian_samples(model, codes, o.num_samples), "codes from a Gaussian fitted to the training codes"
            written["samples"] = dirpath / "samples.png"
            publish_image(_grid(samples, 8), written["samples"], "generation/samples", loggers, step, caption=how)
            pairs = images.shape[0] // 2
            if pairs >= 1:
                rows = interpolation_rows(model, images[:pairs], images[pairs : 2 * pairs], o.steps)
                written["interpolation"] = dirpath / "interpolation.png"
                publish_image(_grid(rows, o.steps + 2), written["interpolation"], "generation/interpolation", loggers, step,
                              caption="test image | decoded points on the line between their codes | test image")
            kl = list(getattr(model, "kl_per_dim", []) or [])
            if kl:
                dims = sorted(range(len(kl)), key=lambda d: -kl[d])[: o.traversal_dims]
                rows = traversal_rows(model, images[0], dims, o.traversal_span, o.traversal_steps)
                written["traversal"] = dirpath / "traversal.png"
                caption = "one row per latent dimension, by KL: " + ", ".join(f"z{d} ({kl[d]:.2f} nats)" for d in dims)
                publish_image(_grid(rows, o.traversal_steps), written["traversal"], "generation/traversal", loggers, step, caption=caption)
    finally:
        model.train(was_training)
    return written
