"""Fault injection: kill or signal a run at a chosen epoch, to test that runs survive it."""

from __future__ import annotations

import fnmatch
import os
import signal as signals
from pathlib import Path

import lightning as L


class FaultInjection(L.Callback):
    """Send ``signal`` to this process at the start of training epoch ``at_epoch`` (0-based).

    With ``at_epoch=2`` the run has finished epochs 0 and 1 and saved their
    ``last.ckpt``: ``SIGKILL`` then imitates a machine that dies, ``SIGTERM`` a
    scheduler that stops the job. With ``once=True`` a marker file in
    ``marker_dir`` keeps the fault from firing again when the run is
    continued, so the same command can be re-run to test resuming::

        aelab-train name=k +callbacks.fault._target_=aelab.callbacks.FaultInjection \\
            +callbacks.fault.at_epoch=2 +callbacks.fault.marker_dir='${paths.run_dir}'
    """

    def __init__(
        self,
        at_epoch: int = 1,
        signal: str = "SIGKILL",
        once: bool = True,
        marker_dir: str | Path | None = None,
        run_dir: str | Path | None = None,
        only_run: str | None = None,
        at_batch: int | None = None,
        times: int = 1,
    ):
        super().__init__()
        self.times, self.fired = max(1, int(times)), 0  # with at_batch: the signal before `times` batches in a row
        self.at_epoch = int(at_epoch)
        self.at_batch = None if at_batch is None else int(at_batch)  # mid-epoch: before training batch at_batch
        self.signal = getattr(signals, str(signal))
        self.marker = Path(marker_dir) / ".fault_injected" if once and marker_dir else None
        # in a sweep: fire only in the job whose folder name matches the pattern only_run (e.g. "3_*", the 4th Optuna
        # trial)
        self.armed = only_run is None or fnmatch.fnmatch(Path(str(run_dir)).name, only_run)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_batch is None:
            self._fire(trainer)

    def on_chunk_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        """Before training batch ``batch_idx`` of the epoch (called by the model's step, inside a chunk)."""
        if self.at_batch is not None and self.at_batch <= batch_idx < self.at_batch + self.times:
            self._fire(trainer)

    def _fire(self, trainer: L.Trainer) -> None:
        if (
            not self.armed
            or trainer.current_epoch != self.at_epoch
            or (self.fired == 0 and self.marker is not None and self.marker.exists())
        ):
            return
        if self.marker is not None and self.fired == 0:
            self.marker.write_text(f"{self.signal.name} at epoch {self.at_epoch}\n")
        self.fired += 1
        os.kill(os.getpid(), self.signal)
