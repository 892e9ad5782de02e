"""Reconstruction grids of fixed validation images: input | corrupted | reconstruction."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from aelab.analysis.images import image_grid, publish_image


class ReconstructionGrid(L.Callback):
    """Every ``every_n_epochs`` validations (and after the last one), draw a 3-row grid.

    Row 1 holds the first ``num_images`` validation images, row 2 their
    corrupted versions (the fixed evaluation corruption), row 3 the
    reconstructions. Saved as ``<dirpath>/recon_epoch=NNN.png`` and logged
    to W&B / TensorBoard under ``samples/reconstruction``.
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1, num_images: int = 8):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.num_images = int(num_images)
        self._images: torch.Tensor | None = None

    def _fixed_images(self, trainer: L.Trainer) -> torch.Tensor | None:
        if self._images is None:
            dm = trainer.datamodule
            if dm is None or "val" not in dm.splits or not dm.is_images:  # vectors: no picture to draw
                return None
            self._images = dm.images("val", limit=self.num_images)
        return self._images

    @torch.no_grad()
    def render(self, pl_module: L.LightningModule, images: torch.Tensor, title: str | None = None) -> torch.Tensor:
        """The grid for ``images`` under the model's current weights."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            x = images.to(pl_module.device)
            _, x_in, x_hat = pl_module.per_sample_metrics(x, pl_module.eval_generator())
        finally:
            pl_module.train(was_training)
        corrupted = "corrupted" if pl_module.noise.name != "none" else "input (no corruption)"
        return image_grid([x, x_in, x_hat], row_labels=["input", corrupted, "reconstruction"], title=title)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        images = self._fixed_images(trainer)
        if images is None:
            return
        grid = self.render(
            pl_module, images, title=f"epoch {epoch}: input | {pl_module.noise.describe()} input | reconstruction"
        )
        publish_image(
            grid,
            self.dirpath / f"recon_epoch={epoch:03d}.png",
            "samples/reconstruction",
            trainer.loggers,
            trainer.global_step,
            caption=f"epoch {epoch}: input | corrupted | reconstruction",
        )
