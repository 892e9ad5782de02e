"""When training started and ended, and how fast it went: for metrics.json and the end-of-run summary."""

from __future__ import annotations

import time

import lightning as L


class Timing(L.Callback):
    """Record the wall-clock time of the first training batch and the end of fitting, and the training images seen.

    The process's CPU time is kept at the same two points (``*_cpu``): with one thread, the training phase's
    CPU time counts its work the same on a machine shared with others, where wall time swings with their load.
    """

    def __init__(self):
        super().__init__()
        self.first_batch_at: float | None = None
        self.fit_end_at: float | None = None
        self.first_batch_cpu: float | None = None
        self.fit_end_cpu: float | None = None
        self.images = 0
        self.train_seconds = 0.0
        self._epoch_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.first_batch_at is None:
            self.first_batch_at, self.first_batch_cpu = time.time(), time.process_time()
        if self._epoch_start is None:
            self._epoch_start = time.perf_counter()
        self.images += int(batch["image"].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start  # training epochs only, validation aside
            self._epoch_start = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self._epoch_start is not None and not trainer.sanity_checking:  # validation inside an epoch: pause the clock
            self.train_seconds += time.perf_counter() - self._epoch_start
            self._epoch_start = None

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_end_at, self.fit_end_cpu = time.time(), time.process_time()
