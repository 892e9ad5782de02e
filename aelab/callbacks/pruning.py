"""Report the monitored metric to an Optuna trial every epoch and stop the run when the pruner says so."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def is_journal(storage: str) -> bool:
    """Whether ``storage`` (``search.storage``) names a journal file rather than a database URL."""
    return "://" not in storage


def open_storage(storage: str):
    """The Optuna storage ``storage`` names: a database URL (``sqlite:///...``, ``postgresql://...``), used as it
    is, or the path of a journal file (Optuna's JournalStorage, safe for several processes and machines)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if is_journal(storage):
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    return storage


def make_pruner(search: Any):
    """The pruner that ``search.pruner`` names (median or none), with its warm-up settings."""
    import optuna

    name = str(search.get("pruner") or "none") if search is not None else "none"
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(search.get("startup_trials", 2)), n_warmup_steps=int(search.get("warmup_epochs", 1))
        )
    raise ValueError(f"search.pruner={name} is not a pruner aelab knows (median, none)")


class OptunaPruning(L.Callback):
    """Optuna's pruning protocol for one aelab run that is trial ``trial`` of study ``study`` in ``storage``
    (a database URL or a journal file, :func:`open_storage`).

    After each validation (rank 0) the value of ``monitor`` is reported as the
    trial's intermediate value at step = epoch; when ``trial.should_prune()`` the
    trainer stops, :attr:`pruned` holds the epoch, and the trial's user attributes
    ``aelab_status=pruned`` / ``aelab_pruned_epoch`` tell the search process (which
    closes the trial as PRUNED). The pruner is the study's, rebuilt here from
    ``pruner`` (an ``optuna.pruners.BasePruner``) because Optuna does not store it.
    """

    def __init__(self, storage: str, study: str, trial: int, monitor: str, pruner=None, mode: str = "min"):
        super().__init__()
        import optuna

        self.monitor, self.mode = monitor, mode
        self.study = optuna.load_study(study_name=study, storage=open_storage(storage), pruner=pruner)
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, int(trial))
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.number = int(trial)
        self.pruned: int | None = None
        self.reason: str | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        epoch = trainer.current_epoch
        self.trial.report(value if math.isfinite(value) else float("inf"), step=epoch)
        if self.trial.should_prune():
            self.pruned = epoch
            self.reason = (
                f"pruned by Optuna after epoch {epoch}: {self.monitor}={value:.6g} is worse than the "
                f"pruner's threshold for that epoch (trial {self.number})"
            )
            self.trial.set_user_attr("aelab_status", "pruned")
            self.trial.set_user_attr("aelab_pruned_epoch", epoch)
            log.info(self.reason)
            trainer.should_stop = True
