"""Random numbers that do not depend on where a run was resumed."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from aelab.data.seeds import step_seed


class StepSeeding(L.Callback):
    """Reseed ``random``, NumPy and torch (CPU and CUDA) before every training batch.

    Every random draw of a training step — corruption, dropout, VAE samples —
    then depends only on ``(seed, epoch, batch, rank)``, not on what drew
    random numbers before it (data loader start-up, evaluation, a restart).
    So a run resumed from an end-of-epoch checkpoint draws exactly the
    numbers an uninterrupted run would have drawn, whatever ``steps_per_call``:
    the model's training step calls :meth:`on_chunk_batch_start` before each
    batch of a chunk, with the batch's index in the epoch.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    def on_chunk_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        value = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        random.seed(value)
        np.random.seed(value)
        torch.random.default_generator.manual_seed(value)
        if (
            torch.cuda.is_initialized()
        ):  # torch.manual_seed would queue a lazy CUDA call (and format a stack trace) every step
            torch.cuda.manual_seed_all(value)
