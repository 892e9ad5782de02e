"""Per-epoch history of every logged metric, for the final and best values in metrics.json."""

from __future__ import annotations

import math

import lightning as L
import torch

from aelab.convergence import assess
from aelab.metric_info import MetricCatalog


def _scalar(value) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value


class MetricsHistory(L.Callback):
    """Record ``trainer.callback_metrics`` after each validation, training epoch and test."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, float]] = []
        self.final: dict[str, float] = {}
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def _record(self, trainer: L.Trainer) -> dict[str, float]:
        row = {}
        for key, value in trainer.callback_metrics.items():
            v = _scalar(value)
            if v is not None:
                row[key] = v
                self.final[key] = v
        return row

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # steps past the checkpoint are trained again (resumed), or all of them (a run killed before its first
        # checkpoint, restarted in its folder): the killed process's rows of those steps would appear twice
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if hasattr(logger, "drop_rows_from"):
                    logger.drop_rows_from(trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = self._record(trainer)
        row["epoch"] = trainer.current_epoch
        self.epochs.append(row)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)  # the module logs its epoch means after the callbacks' on_train_epoch_end

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def best(self, info: MetricCatalog) -> dict[str, float]:
        """Best value over the recorded validations of every ``val/*`` metric with a declared direction."""
        out: dict[str, float] = {}
        for row in self.epochs:
            for key, value in row.items():
                higher = info.higher_is_better(key)
                if not key.startswith("val/") or higher is None or math.isnan(value):
                    continue
                better = max if higher else min
                out[key] = value if key not in out else better(out[key], value)
        return out

    def best_epoch(self, metric: str, higher_is_better: bool) -> int | None:
        """The epoch at which ``metric`` was best."""
        rows = [r for r in self.epochs if metric in r and not math.isnan(r[metric])]
        if not rows:
            return None
        pick = max if higher_is_better else min
        return int(pick(rows, key=lambda r: r[metric])["epoch"])

    def convergence(self, metric: str, higher_is_better: bool) -> dict:
        """Whether ``metric`` was still improving at the last validation (:func:`aelab.convergence.assess`): its
        last value in each epoch, epochs counted from 1."""
        by_epoch = {int(r["epoch"]): r[metric] for r in self.epochs if metric in r}
        epochs = sorted(by_epoch)
        return assess([by_epoch[e] for e in epochs], metric, higher_is_better, [e + 1 for e in epochs])

    def state_dict(self) -> dict:
        # a checkpoint is written after the module has logged its epoch means (Lightning calls the checkpoint callbacks
        # last): take them now, so a run continued from it (killed while testing) records this epoch's, not the last
        if self._trainer is not None and not self._trainer.sanity_checking:
            self._record(self._trainer)
        return {"epochs": self.epochs, "final": self.final}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs = list(state_dict.get("epochs", []))
        self.final = dict(state_dict.get("final", {}))
