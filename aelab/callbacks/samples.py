"""Reconstruction grids of fixed validation images during training: input | corrupted | reconstruction."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from aelab.analysis.images import image_grid, publish_image


class ReconstructionGrid(L.Callback):
    """Every ``every_n_epochs`` epochs (and after the last one), draw the fixed validation images and their
    reconstructions.

    Rows: the first ``num_images`` validation images; the model's input when the run corrupts it (its fixed
    evaluation corruption, e.g. "Gaussian noise σ=0.3" — no such row for a plain autoencoder); the
    reconstructions. Epochs are counted from 1 as in every aelab figure: ``<dirpath>/recon_epoch=003.png`` is the
    grid after the third epoch. Logged to W&B / MLflow / TensorBoard under ``samples/reconstruction``.
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1, num_images: int = 16):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.num_images = int(num_images)
        self._images: torch.Tensor | None = None

    def _fixed_images(self, trainer: L.Trainer) -> torch.Tensor | None:
        if self._images is None:
            dm = trainer.datamodule
            if dm is None or "val" not in dm.splits or not dm.is_images or dm.value_range != "unit":
                return None  # vectors, real values: no picture to draw
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
        if pl_module.noise.name == "none":
            return image_grid([x, x_hat], row_labels=["validation images", "reconstructions"], title=title)
        rows = ["validation images", f"model input: {pl_module.noise.caption()}", "reconstructions"]
        return image_grid([x, x_in, x_hat], row_labels=rows, title=title)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1  # Lightning counts from 0; aelab's figures from 1
        total = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        last = total is not None and epoch >= total
        if epoch % self.every_n_epochs and not last:
            return
        images = self._fixed_images(trainer)
        if images is None:
            return
        when = f"after epoch {epoch}" + (f" of {total}" if total else "")
        grid = self.render(pl_module, images, title=f"Reconstructions {when}")
        publish_image(
            grid,
            self.dirpath / f"recon_epoch={epoch:03d}.png",
            "samples/reconstruction",
            trainer.loggers,
            trainer.global_step,
            caption=f"validation images and their reconstructions {when}",
        )
