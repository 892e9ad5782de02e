"""The Hydra plugin entry for aelab's Optuna search (Hydra loads sweepers only from ``hydra_plugins``).

It takes the configuration of hydra-optuna-sweeper unchanged and hands the work to
:class:`aelab.run.search.OptunaSearch`: a study kept in a SQLite file of the sweep folder,
a killed search that continues to ``n_trials``, and trials pruned by their jobs.
Kept light: Hydra imports every plugin module at start-up.
"""

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class AelabOptunaSweeper(OptunaSweeper):
    def __init__(self, **kwargs: Any) -> None:
        from aelab.run.search import OptunaSearch

        self.sweeper = OptunaSearch(**kwargs)
