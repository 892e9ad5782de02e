"""The Hydra plugin entry for aelab's Optuna search (Hydra loads sweepers only from ``hydra_plugins``).

Its configuration is ``conf/hydra/sweeper/aelab_optuna.yaml``; the work is
:class:`aelab.run.search.OptunaSearch`'s: Optuna's ask-and-tell over Hydra's launcher, with one
study shared by every worker process. Kept light: Hydra imports every plugin module at start-up.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper


class AelabOptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        from aelab.run.search import OptunaSearch

        self.search = OptunaSearch(**options)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.search.sweep(arguments)
