"""The overfitting gap: validation loss minus training loss, measured alike."""

from __future__ import annotations

import logging
import math

import lightning as L

log = logging.getLogger(__name__)


class OverfittingGap(L.Callback):
    """At every validation, log ``gap/<key>`` for the model's ``gap_keys``.

    The training side is measured like the validation side: in eval mode, on
    as many training images as validation evaluated (a fixed subset), with the
    same seeded corruption. It is read in batches of the training batch size (in
    eval mode a batch's size changes no image's value): on a CPU a conv net's
    forward pass costs 0.11 ms an image in batches of 256 and 0.19 ms in batches
    of 1,000, and the gap is the costliest default callback (5,000 more forward
    passes each validation). The training loss that the progress bar shows is
    not comparable — it is taken in train mode on ever-changing corruptions.
    Also logs the training-side value as ``train_eval/<key>`` and ``gap/<key>_ci95``,
    the half-width of the gap's 95 % interval: 1.96 × the standard error of the
    difference of two means over different images (each side's variance over
    its images), so a gap inside ±ci95 of zero is not evidence of overfitting.

    Args:
        max_samples: cap on the images measured on each side (``None``: all
            that validation saw).
    """

    def __init__(self, max_samples: int | None = None):
        super().__init__()
        self.max_samples = max_samples

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        if dm is None:
            log.warning("overfitting gap skipped: the trainer has no DataModule")
            return
        n = pl_module.stage_count("val")
        if self.max_samples is not None:
            n = min(n, int(self.max_samples))
        if n <= 0:
            return
        train_means = pl_module.evaluate_batches(
            dm.batches("train", limit=n, device=pl_module.device, batch_size=getattr(dm, "batch_size", None)),
            spread=True,
        )
        n_val = pl_module.stage_count("val")
        for key, sign in pl_module.gap_keys.items():
            if key not in train_means:
                continue
            val_mean = float(pl_module.stage_mean("val", key))
            pl_module.log(f"train_eval/{key}", train_means[key], on_step=False, on_epoch=True, sync_dist=True)
            pl_module.log(
                f"gap/{key}", sign * (val_mean - train_means[key]), on_step=False, on_epoch=True, sync_dist=True
            )
            val_var = pl_module.stage_variance("val", key)
            if val_var is not None and n_val > 1 and train_means.get("__n", 0) > 1:
                # the two means are over different images: their difference's standard error, 95 % normal interval
                se = math.sqrt(val_var / n_val + train_means[f"{key}__var"] / train_means["__n"])
                pl_module.log(f"gap/{key}_ci95", 1.96 * se, on_step=False, on_epoch=True, sync_dist=True)
