"""aelab's Optuna search: hydra-optuna-sweeper's search with a stored study, continuation and pruning.

``hparams_search=...`` selects it (``hydra/sweeper=aelab_optuna``). Compared with the plain sweeper:

* **Storage.** The study lives in ``<sweep folder>/optuna.db`` (SQLite) unless
  ``hydra.sweeper.storage`` names another database, so ``optuna-dashboard sqlite:///...``
  shows it while it runs and after.
* **Continuation.** Re-running the same command on the same sweep folder (``sweep.name=...``
  or ``sweep.resume=true``) loads the study, marks the trials a killed process left
  ``RUNNING`` as failed (they were interrupted, not finished), and asks only for the trials
  still missing to reach ``n_trials`` finished ones (completed, pruned or failed).
  Trial ``N`` runs in job folder ``N_<overrides>``, so new trials never reuse old folders.
* **Pruning.** Each job gets ``search.storage``, ``search.study`` and ``search.trial``; its
  :class:`aelab.callbacks.OptunaPruning` reports the monitored metric every epoch to the study
  and stops the run when the pruner (``search.pruner``) says so. The job records ``pruned``
  and tells the study through the trial's user attribute ``aelab_status``; the search then
  closes that trial as ``PRUNED``, not ``FAIL``.

This module knows Hydra (it is a sweeper); the training side (:mod:`aelab.callbacks.pruning`) knows only Optuna.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

from aelab.run.compose import quote_override

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's storage schema set-up talks at INFO

#: the overrides each job receives (excluded from job folder names by conf/hydra/default.yaml)
JOB_KEYS = ("search.storage", "search.study", "search.trial")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def default_storage(sweep_dir: str | Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


class OptunaSearch(OptunaSweeperImpl):
    """hydra-optuna-sweeper's ``OptunaSweeperImpl`` with its ``sweep`` loop replaced (see the module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config() + list(arguments)
        is_grid = isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler
        distributions, fixed = create_params_from_overrides(params_conf)
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        if is_grid:
            choices = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(choices)
            size = 1
            for values in choices.values():
                size *= len(values)
            self.n_trials = min(self.n_trials, size)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        storage = str(self.storage) if self.storage else default_storage(self.config.hydra.sweep.dir)
        study_name = str(self.study_name or "aelab")
        directions = self._get_directions()
        from aelab.callbacks.pruning import make_pruner  # (imports Lightning: only when a search starts)

        search = OmegaConf.select(self.config, "search")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search logs what it does itself
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=self.sampler,
            directions=directions,
            pruner=make_pruner(search),
            load_if_exists=True,
        )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            log.warning(
                "trial %d was left running by an earlier process (killed?): closed as failed, not counted", trial.number
            )
            study._storage.set_trial_user_attr(trial._trial_id, "aelab_status", "interrupted")
            study.tell(trial.number, state=TrialState.FAIL)
        done = sum(
            t.user_attrs.get("aelab_status") != "interrupted" for t in study.get_trials(deepcopy=False, states=FINISHED)
        )
        if done and hasattr(self.sampler, "reseed_rng"):
            self.sampler.reseed_rng()  # a seeded sampler would propose the first trials' values again
        to_go = max(0, self.n_trials - done)
        log.info(
            "Optuna study %r in %s: %d trial%s finished earlier, %d to go (n_trials=%d)",
            study_name,
            storage,
            done,
            "" if done == 1 else "s",
            to_go,
            self.n_trials,
        )
        while to_go > 0:
            batch = min(to_go, self.n_jobs)
            trials = [study.ask() for _ in range(batch)]
            overrides = [
                (
                    *job,
                    f"search.storage={quote_override(storage)}",
                    f"search.study={quote_override(study_name)}",
                    f"search.trial={trial.number}",
                )
                for job, trial in zip(self._configure_trials(trials, distributions, fixed), trials)
            ]
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            failures = [self._close(study, trial, ret, len(directions)) for trial, ret in zip(trials, returns)]
            failures = [f for f in failures if f is not None]
            if returns and len(failures) / len(returns) > self.max_failure_rate:
                log.error(
                    "%d of %d trials failed (hydra.sweeper.max_failure_rate=%s)",
                    len(failures),
                    len(returns),
                    self.max_failure_rate,
                )
                for ret in returns:
                    ret.return_value  # noqa: B018 — JobReturn raises the job's own error
            to_go -= batch
        self._save_results(study, len(directions))

    @staticmethod
    def _close(study: optuna.Study, trial: optuna.trial.Trial, ret: Any, n_objectives: int) -> str | None:
        """Tell the study how ``trial``'s job ended; returns the failure's reason, or None."""
        storage = getattr(
            study._storage, "_backend", study._storage
        )  # the database, not this process's cache of its own trials
        attrs = storage.get_trial(trial._trial_id).user_attrs
        if attrs.get("aelab_status") == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
            log.info("trial %d pruned at epoch %s", trial.number, attrs.get("aelab_pruned_epoch"))
            return None
        try:
            value = ret.return_value
            values = [float(value)] if n_objectives == 1 else [float(v) for v in value]
            if len(values) != n_objectives or any(v != v for v in values):
                raise ValueError(f"the job returned {value!r}")
        except Exception as exc:  # noqa: BLE001 — a failed job (its error is in its run folder) or no objective
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, exc)
            return str(exc)
        study.tell(trial.number, values=values)
        return None

    def _save_results(self, study: optuna.Study, n_objectives: int) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in FINISHED}
        results: dict[str, Any] = {"name": "optuna", "study": study.study_name, "trials": counts}
        if complete and n_objectives == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info(
                "best trial %d: %s = %s with %s",
                best.number,
                self.config.get("optimized_metric"),
                best.value,
                best.params,
            )
        elif complete:
            results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
        OmegaConf.save(OmegaConf.create(results), Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml")
