"""Keep what a failed or interrupted run has: its weights as ``last.ckpt``."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from aelab.errors import DiskFullError, find_aelab_error
from aelab.store.files import no_space

log = logging.getLogger(__name__)


class SaveOnFailure(L.Callback):
    """On an exception during fitting (NaN loss, SIGTERM or a first Ctrl-C, a bug), save ``last.ckpt``.

    SIGTERM and a first Ctrl-C stop between two training calls, where the saved state resumes exactly. A
    NaN loss is detected before the (last) optimizer step of its call, so the saved weights are the last
    finite ones; weights that are already non-finite are not saved over an earlier good ``last.ckpt``.
    A second Ctrl-C stops at once, wherever the step is: nothing is saved then, and the earlier
    ``last.ckpt`` stays the one to continue from. Nothing is saved before training
    started: until then the model holds weights that were neither loaded from the run's checkpoint nor trained in
    it (a failed restore — a checkpoint of another model size — must not be answered by writing the new, untrained
    model over it).
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt"):
        super().__init__()
        self.path = Path(dirpath) / filename
        self.training = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.training = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.training = True  # after Lightning restored the checkpoint, if any: the weights are this run's

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != TrainerFn.FITTING or not self.training:
            return
        if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C: mid-step, not a state to resume from
            log.warning("stopped at once: %s is the one to continue from", self.path)
            return
        if isinstance(find_aelab_error(exception), DiskFullError) or no_space(exception) is not None:
            kept = "the earlier one is kept" if self.path.is_file() else "there is none yet"
            log.warning("the disk is full: %s is not written after the failure (%s)", self.path, kept)
            return
        finite = all(torch.isfinite(p).all() for p in pl_module.parameters())
        if not finite:
            log.warning("weights are not finite; keeping the earlier %s", self.path)
            return
        try:
            # Not trainer.save_checkpoint: its barrier would wait forever for a DDP rank that already failed.
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # noqa: SLF001 — Lightning has no public way to save from on_exception
            if trainer.is_global_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.strategy.save_checkpoint(checkpoint, str(self.path))  # rank 0 writes, atomically
            if trainer.is_global_zero:
                log.info("saved the weights at the failure to %s", self.path)
        except Exception as exc:  # noqa: BLE001 — never mask the original failure
            log.warning("could not save %s after the failure: %s", self.path, exc)
