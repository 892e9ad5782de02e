"""After testing: samples, interpolations and (VAEs) latent traversals as PNG grids and logged images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from aelab.evaluation.generation import GenerationTask


class GenerationGrids(GenerationTask, L.Callback):
    """The generation task, run with the tested weights: ``<dirpath>/{samples,interpolation,traversal}.png``.

    Args:
        dirpath: where the PNGs go (``<run>/samples``).
        **options: the options of :class:`~aelab.evaluation.generation.GenerationTask`.
    """

    def __init__(self, dirpath: str, **options):
        GenerationTask.__init__(self, **options)
        self.dirpath = Path(dirpath)
        self.written: dict[str, Path] = {}

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is not None and dm.is_images and pl_module.value_range == "unit":  # real values are no picture
            self.written = self.draw(pl_module, dm, self.dirpath, trainer.loggers, trainer.global_step)
