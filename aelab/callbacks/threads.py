"""A training job's CPU threads follow the jobs that share the machine (:mod:`aelab.run.threads`)."""

from __future__ import annotations

import lightning as L

from aelab.run.threads import Plan


class ThreadShare(L.Callback):
    """While training, look again every second at how many aelab jobs run and take this job's share of the cores."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.plan.revise()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.plan.revise()
