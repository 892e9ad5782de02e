"""The progress bar, counting training batches and updated every few batches instead of every batch."""

from __future__ import annotations

import time
from typing import Any

from lightning.fabric.utilities.imports import _IS_INTERACTIVE  # what Lightning's own bar asks
from lightning.pytorch.callbacks import RichProgressBar

from aelab.data.chunks import CHUNK


class ProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar`` whose training bar counts batches and updates every ``refresh_every`` of them.

    The training loader hands the model chunks of several batches per call (``steps_per_call``); the bar
    counts batches all the same (its total is the epoch's batches, read from the loader). The stock callback
    updates the task and recomputes the progress-bar metrics after every call (~0.14 ms each); this one every
    ``refresh_every`` batches, and it tells the model the same cadence, so the value it shows is logged (a
    ``self.log``, ~0.3 ms) only before those updates (:mod:`aelab.models.step`).

    The bar is drawn at most ``refresh_rate`` times a second, and at once when a bar appears, ends or hides (a
    stage's last state is never left undrawn while the next work runs). Each redraw costs 1.7 ms of CPU; after
    every update, as at Lightning's default rate (100), that is 1.3 % of a VAE epoch on a CPU at 7-8 updates a
    second, two a second a quarter of that. It is drawn from the training thread: Lightning's refresh thread
    sleeps ``1 / refresh_rate`` s between looks, and stopping the bar at the end of each stage (fit, test) waited
    for it to wake — 0.25 s on average at two a second, every run. Other arguments are ``RichProgressBar``'s
    (``leave``, ``theme``).
    """

    def __init__(self, refresh_every: int = 10, refresh_rate: float = 2, **kwargs: Any):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.refresh_every = max(1, int(refresh_every))
        self._next_draw = 0.0
        self._drawn: tuple = ()

    def _init_progress(self, trainer) -> None:
        super()._init_progress(trainer)
        live = getattr(self.progress, "live", None)
        thread = getattr(live, "_refresh_thread", None)
        if thread is not None:  # just started, asleep, asked for nothing: it ends when it wakes
            thread.stop()
            live._refresh_thread = None
            self._next_draw, self._drawn = 0.0, ()

    def refresh(self, hard: bool = False) -> None:
        """Draw now when ``hard`` (and at every update in a notebook, as Lightning's bar does there), when
        ``1 / refresh_rate`` s have passed since the last draw, or when a bar appeared, ended or hid since."""
        if self.progress is None:
            return
        now = time.monotonic()
        bars = tuple((task.id, task.finished, task.visible) for task in self.progress.tasks)
        if hard or _IS_INTERACTIVE or now >= self._next_draw or bars != self._drawn:
            self.progress.refresh()
            self._next_draw, self._drawn = now + 1 / max(self.refresh_rate, 1e-3), bars

    def _stop_progress(self) -> None:
        """The last state drawn before the bar stops (Rich's stop draws it again in a terminal, not in a notebook)."""
        if self.progress is not None and not self._progress_stopped:
            self.progress.refresh()
        super()._stop_progress()

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.is_enabled and hasattr(pl_module, "progress_every"):
            pl_module.progress_every = self.refresh_every

    @property
    def total_train_batches(self) -> int | float:
        """The epoch's training batches (Lightning's count is of calls, each a chunk of batches)."""
        batches = getattr(self.trainer.train_dataloader, "batches_per_epoch", None)
        if batches is None:
            return super().total_train_batches
        if self.trainer.max_epochs == -1 and self.trainer.max_steps is not None and self.trainer.max_steps > 0:
            return min(batches, self.trainer.max_steps - self.trainer.global_step)
        return batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        info = batch.get(CHUNK) if isinstance(batch, dict) else None
        done = batch_idx + 1 if info is None else info["first"] + len(info["sizes"])
        before = done - (1 if info is None else len(info["sizes"]))
        crossed = done // self.refresh_every != before // self.refresh_every
        if not (crossed or done >= self.total_train_batches or self.train_progress_bar_id is None):
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._update(self.train_progress_bar_id, done)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _get_train_description(self, current_epoch: int) -> str:
        """``Epoch k/n`` counted from 1, as aelab's figures and grids count (Lightning's bar says "Epoch 2/2" for the
        third of three epochs)."""
        text = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            text += f"/{self.trainer.max_epochs}"
        return f"{text:{len(self.validation_description)}}"
