"""aelab's Optuna search: Optuna's ask-and-tell over Hydra's launcher, one study shared by any number of workers.

``hparams_search=...`` selects it (``hydra/sweeper=aelab_optuna``, ``conf/hydra/sweeper/aelab_optuna.yaml``).

* **Storage.** The study lives in ``<sweep folder>/optuna.journal`` (Optuna's JournalStorage: one file that
  several processes, and several machines on a shared file system, write safely) unless
  ``hydra.sweeper.storage`` names another journal file or a database URL (``postgresql://...``,
  ``sqlite:///...``). A sweep folder of aelab 0.2's first searches holds ``optuna.db`` instead (SQLite,
  written by Optuna 2): it is used, once ``optuna storage upgrade`` has brought it to this Optuna's schema;
  until then the search is refused with that command.
* **Workers, no batches.** Every process started with the search command on the same sweep folder (or
  storage) is a worker of the study. A worker runs ``hydra.sweeper.n_jobs`` trials at once, one per slot;
  a slot asks the study for its next trial the moment its trial ends. Trial numbers are the study's, so
  each trial runs once, in job folder ``N_<values>``, whichever worker runs it. Workers stop when the study
  holds ``n_trials`` finished trials (completed, pruned, or failed in their job); while trials of other
  workers still run, a worker with nothing left to ask waits for them, ready to replace one that dies.
* **Dead workers.** A worker records a heartbeat for each trial it runs, every ``heartbeat_interval``
  seconds (Optuna's heartbeat: RDBStorage's own for a database, :class:`HeartbeatJournalStorage` for a
  journal). A running trial with no heartbeat for ``grace_period`` seconds was a dead worker's: the
  first worker to see it closes it as failed (Optuna's ``fail_stale_trials``, once), it does not count
  towards ``n_trials``, and Optuna's retry callback queues it again with the same values (``max_retry``
  times; with 0 a new trial takes its place).
* **Continuation.** A killed search continues when the same command runs again on the same sweep folder
  (``sweep.name=...`` or ``sweep.resume=true``): the new process is one more worker, and the trials the
  killed one left running are closed as above once their heartbeat is ``grace_period`` old.
* **Pruning.** Each job gets ``search.storage``, ``search.study`` and ``search.trial``; its
  :class:`aelab.callbacks.OptunaPruning` reports the monitored metric every epoch to the study and stops
  the run when the pruner (``search.pruner``) says so. The job records ``pruned`` and tells the study
  through the trial's user attribute ``aelab_status``; the worker then closes the trial as ``PRUNED``.

This module knows Hydra (it is a sweeper); the training side (:mod:`aelab.callbacks.pruning`) knows only Optuna.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat, fail_stale_trials, get_heartbeat_thread
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from aelab.errors import ConfigError
from aelab.run.compose import quote_override
from aelab.run.precheck import Refused
from aelab.store.files import atomic_path

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's storage schema set-up talks at INFO
# heartbeats, their retry callback and fail_stale_trials are "experimental" in Optuna since 2.9; aelab relies on them
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

#: the overrides each job receives (excluded from job folder names by conf/hydra/default.yaml)
JOB_KEYS = ("search.storage", "search.study", "search.trial")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
WORKER = "aelab:worker"  # a trial's system attribute: the worker (host:pid) that asked for it
HEARTBEAT = "aelab:heartbeat"  # a journal trial's system attribute: its worker's last heartbeat (Unix time)
LEGACY_DB = "optuna.db"  # the study file of a sweep folder from before the journal (Optuna 2, SQLite)


def default_storage(sweep_dir: str | Path) -> str:
    """The sweep folder's study: its journal, or the SQLite file of a folder from before the journal."""
    sweep_dir = Path(sweep_dir).resolve()
    if (sweep_dir / LEGACY_DB).is_file():
        return f"sqlite:///{sweep_dir / LEGACY_DB}"
    return str(sweep_dir / "optuna.journal")


# ----------------------------------------------------------------------------- the search space
def _distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of one swept override (hydra-optuna-sweeper's grammar), or a fixed value's text."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ConfigError(f"hydra.sweeper.params: {override.input_line} is not a search space Optuna can sample")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """``(distributions, fixed values)`` of ``key=choice(...)|interval(...)|range(...)|value`` overrides."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        found = _distribution(override)
        name = override.get_key_element()
        if isinstance(found, BaseDistribution):
            distributions[name] = found
        else:
            fixed[name] = found
            distributions.pop(name, None)
    return distributions, fixed


def grid_choices(name: str, distribution: BaseDistribution) -> list:
    """Every value of a discrete distribution (the grid sampler's choices)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, (IntDistribution, FloatDistribution)) and distribution.step and not distribution.log:
        n = int(round((distribution.high - distribution.low) / distribution.step)) + 1
        return [distribution.low + i * distribution.step for i in range(n)]
    raise ConfigError(f"hydra.sweeper.params.{name}: the grid sampler takes choice(...) or range(...) only")


# ----------------------------------------------------------------------------- checking before any folder exists
def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def option_problems(options: dict[str, Any]) -> list[str]:
    """The problems of the search's own options (``hydra.sweeper.*``), each naming its key."""
    problems = []
    key = "hydra.sweeper."
    for name, least, what in (("n_trials", 1, "trials"), ("n_jobs", 1, "trials at once"), ("max_retry", 0, "times")):
        if name in options and not _whole(options[name], least):
            problems.append(f"{key}{name}={options[name]}: a whole number of {what}, >= {least}")
    interval, grace = options.get("heartbeat_interval", 10), options.get("grace_period", 60)
    if not _whole(interval, 1):
        problems.append(f"{key}heartbeat_interval={interval}: a whole number of seconds, >= 1")
    elif not (_whole(grace, 1) and grace > interval):
        problems.append(f"{key}grace_period={grace}: whole seconds, more than heartbeat_interval={interval}")
    rate = options.get("max_failure_rate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        problems.append(f"{key}max_failure_rate={rate}: a fraction between 0 and 1")
    direction = options.get("direction", "minimize")
    directions = list(direction) if isinstance(direction, Sequence) and not isinstance(direction, str) else [direction]
    wrong = [d for d in directions if str(d) not in ("minimize", "maximize")]
    if wrong or not directions:
        problems.append(f"{key}direction={direction}: minimize or maximize (a list of them for several objectives)")
    return problems


def search_problems(config: DictConfig, overrides: list[str]) -> list[str]:
    """Everything wrong with an Optuna search before its sweep folder exists: its options, its sampler, its search
    space (a grid sampler takes ``choice``/``range`` only), its database, and the config of a job at each value of
    the search space (a misspelt or out-of-range ``hydra.sweeper.params`` entry) — each problem naming its key."""
    from hydra.utils import instantiate

    from aelab.callbacks.pruning import is_journal
    from aelab.run.sweeps import sweep_problems

    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    problems = option_problems(sweeper)
    sampler_cfg = config.hydra.sweeper.get("sampler")
    target = str((sampler_cfg or {}).get("_target_", ""))
    try:
        instantiate(sampler_cfg) if sampler_cfg is not None else None
    except Exception as exc:  # noqa: BLE001 — Optuna's or Hydra's words, on one line
        cause = exc.__cause__ or exc
        problems.append(f"hydra.sweeper.sampler ({target}): {str(cause).splitlines()[0] if str(cause) else cause!r}")
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    try:
        distributions, fixed = search_space(params + [o for o in overrides if "=" in o])
        if target.endswith("GridSampler"):
            for name, distribution in distributions.items():
                grid_choices(name, distribution)
    except ConfigError as exc:
        return [*problems, str(exc)]
    except Exception as exc:  # noqa: BLE001 — Hydra's override grammar, on one line
        return [*problems, f"hydra.sweeper.params: {str(exc).splitlines()[0]}"]
    storage = sweeper.get("storage")
    if storage and not is_journal(str(storage)):
        try:
            RDBStorage(str(storage))
        except Exception as exc:  # noqa: BLE001 — an unreachable server, a wrong URL, a missing driver
            first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            problems.append(f"hydra.sweeper.storage={storage} cannot be opened: {first}")
    if problems:
        return problems
    # each job's config at every choice and both ends of every interval, as a grid sweep's jobs are checked
    given = {o.split("=", 1)[0] for o in overrides if "=" in o}
    fixed = {k: v for k, v in fixed.items() if k not in given}  # the command line's own values stay as typed
    searched = {k.lstrip("+~") for k in [*distributions, *fixed]}
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in searched | {"hparams_search"}]
    kept = [o for o in kept if not o.split("=", 1)[0].startswith(("hydra/sweeper", "hydra.sweeper"))]
    groups = set((OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}).keys())
    unknown = [
        name
        for name in [*distributions, *fixed]
        if not (name in groups or "/" in name or name.startswith(("+", "~")) or "hydra" in name)
        and OmegaConf.select(config, name, default="\0") == "\0"
    ]
    if unknown:
        return [_unknown_key(config, name) for name in unknown]
    grid = [f"{k}={v}" for k, v in fixed.items() if k != "hparams_search" and "hydra" not in k]
    for name, distribution in distributions.items():
        if isinstance(distribution, CategoricalDistribution):
            values = list(distribution.choices)
        else:
            values = [distribution.low, distribution.high]
        grid.append(f"{name}=" + ",".join(str(v) for v in dict.fromkeys(values)))
    found = sweep_problems(config, kept + grid, each_value=True)
    return [p.replace("in the sweep's job", "in the search's trial") for p in found]


def _unknown_key(config: DictConfig, name: str) -> str:
    """A searched key the config does not have, with the closest one it has."""
    import difflib

    parent, _, leaf = name.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, keys, n=1)
    hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    return f"{name} (searched by hydra.sweeper.params or the command line) is not a key of the config{hint}"


# ----------------------------------------------------------------------------- storages with heartbeats
class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with Optuna's heartbeat protocol (which Optuna implements for databases only).

    A heartbeat is the trial's system attribute ``aelab:heartbeat`` (the worker's clock, Unix time); a
    running trial is stale when neither it nor the trial's start is ``grace_period`` seconds recent. Workers
    on several machines need clocks that agree to well within ``grace_period`` (NTP does).
    """

    def __init__(self, path: str, heartbeat_interval: int, grace_period: int, on_stale: Any = None):
        super().__init__(JournalFileBackend(path))
        self.heartbeat_interval, self.grace_period, self.on_stale = heartbeat_interval, grace_period, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            pass  # closed meanwhile (by its worker, or as stale by another)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(float(trial.system_attrs.get(HEARTBEAT, 0.0)), started) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.on_stale

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # the name before Optuna 4.9


def worker_storage(storage: str, heartbeat_interval: int, grace_period: int, on_stale: Any = None):
    """The storage a worker opens: ``storage`` (:func:`aelab.callbacks.pruning.open_storage`) with heartbeats."""
    from aelab.callbacks.pruning import is_journal  # (imports Lightning: only when a search starts)

    if is_journal(storage):
        return HeartbeatJournalStorage(storage, heartbeat_interval, grace_period, on_stale)
    import sqlalchemy.exc

    callback = "heartbeat_stale_trial_callback"  # Optuna 4.9's name for failed_trial_callback
    if callback not in inspect.signature(RDBStorage).parameters:
        callback = "failed_trial_callback"
    options = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period, callback: on_stale}
    try:
        for attempt in range(5):
            try:
                return RDBStorage(storage, **options)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                if attempt == 4:  # workers that start together on an empty database all create Optuna's tables
                    raise
                time.sleep(0.5 + attempt)
    except RuntimeError as exc:
        if "optuna storage upgrade" not in str(exc):
            raise
        written = str(exc).split("(set up by optuna ", 1)[-1].split(")", 1)[0]
        raise Refused(
            ConfigError(
                f"the Optuna study {storage} was written by Optuna {written}, which Optuna {optuna.__version__} "
                f"reads only once upgraded: run `optuna storage upgrade --storage {storage}` (Optuna {written} "
                "cannot read it afterwards) and the same command again, or start a new sweep (another sweep.name=)"
            )
        ) from None


def _retry_callback(max_retry: int):
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
    return (retry or optuna.storages.RetryFailedTrialCallback)(max_retry=max_retry)


class StaleTrials:
    """Optuna's stale-trial callback: log the dead worker's trial, then queue it again (up to ``max_retry``)."""

    def __init__(self, max_retry: int):
        self.max_retry = max_retry
        self.retry = _retry_callback(max_retry) if max_retry > 0 else None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        again = self.retry is not None and len(trial.system_attrs.get("retry_history", [])) < self.max_retry
        log.warning(
            "trial %d: no heartbeat from its worker %s for longer than the grace period (dead?): closed as failed, "
            "not counted%s",
            trial.number,
            trial.system_attrs.get(WORKER, "?"),
            ", queued again with the same values" if again else "",
        )
        if self.retry is not None:
            self.retry(study, trial)


# ----------------------------------------------------------------------------- which trials count
def interrupted(trial: FrozenTrial) -> bool:
    """A trial closed as failed because its worker died (a heartbeat's, or an earlier aelab's, verdict)."""
    status = trial.user_attrs.get("aelab_status")
    return trial.state == TrialState.FAIL and (
        status == "interrupted" or (status is None and WORKER in trial.system_attrs)
    )


def counts(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is one of the study's ``n_trials``: finished in its job, or running."""
    if trial.user_attrs.get("aelab_status") == "surplus":
        return False
    return trial.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and not interrupted(trial)
    )


# ----------------------------------------------------------------------------- the sweeper
class OptunaSearch(Sweeper):
    """The search (see the module docstring); its options are ``hydra.sweeper``'s."""

    def __init__(
        self,
        sampler: Any,
        direction: Any = "minimize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        params: DictConfig | dict | None = None,
        heartbeat_interval: int = 10,
        grace_period: int = 60,
        max_retry: int = 1,
    ) -> None:
        self.sampler, self.storage, self.study_name = sampler, storage, study_name
        self.directions = (
            [str(d) for d in direction]
            if isinstance(direction, Sequence) and not isinstance(direction, str)
            else [str(direction)]
        )
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = dict(params or {})
        self.heartbeat_interval, self.grace_period, self.max_retry = heartbeat_interval, grace_period, int(max_retry)
        problems = option_problems(
            {
                "direction": direction,
                "n_trials": n_trials,
                "n_jobs": n_jobs,
                "max_failure_rate": max_failure_rate,
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                "max_retry": max_retry,
            }
        )
        if problems:
            raise ConfigError("; ".join(problems))
        self.max_failure_rate = float(max_failure_rate)
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.poll = min(5.0, heartbeat_interval)  # how often a waiting worker looks at the study again
        self._lock = threading.Lock()  # one ask at a time in this worker
        self._stop = threading.Event()
        self._failures: list[tuple[int, Any]] = []
        self._closed = 0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    # ------------------------------------------------------------------------- the study
    def _open(self, storage: str) -> optuna.Study:
        from aelab.callbacks.pruning import make_pruner  # (imports Lightning: only when a search starts)

        opened = worker_storage(storage, self.heartbeat_interval, self.grace_period, StaleTrials(self.max_retry))
        options = dict(
            study_name=self.study_name_or_default,
            storage=opened,
            sampler=self.sampler,
            directions=self.directions,
            pruner=make_pruner(OmegaConf.select(self.config, "search")),
        )
        try:
            return optuna.create_study(**options)  # this worker is the study's first
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.create_study(**options, load_if_exists=True)
        if study.directions != [optuna.study.StudyDirection[d.upper()] for d in self.directions]:
            raise Refused(
                ConfigError(
                    f"the Optuna study {study.study_name!r} in {storage} was started with direction "
                    f"{[d.name.lower() for d in study.directions]}, not {self.directions}: start a new sweep "
                    "(another sweep.name=) or give the study's hydra.sweeper.direction"
                )
            )
        if hasattr(self.sampler, "reseed_rng"):
            self.sampler.reseed_rng()  # a seeded sampler would propose the values another worker already has
        return study

    @property
    def study_name_or_default(self) -> str:
        return str(self.study_name or "aelab")

    def _close_stale(self, study: optuna.Study) -> None:
        """Close the trials of dead workers: Optuna's heartbeat check, and trials an earlier aelab (no heartbeats)
        left running longer ago than the grace period."""
        fail_stale_trials(study)
        old = time.time() - self.grace_period
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if WORKER not in trial.system_attrs and trial.datetime_start and trial.datetime_start.timestamp() < old:
                log.warning("trial %d was left running by an earlier process (killed?): closed as failed", trial.number)
                try:
                    study._storage.set_trial_user_attr(trial._trial_id, "aelab_status", "interrupted")
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                    pass  # another worker closed it first

    def _next_trial(self, study: optuna.Study) -> optuna.trial.Trial | None:
        """Ask for the next trial at once; wait while other workers' running trials complete ``n_trials``
        (one of them may die); None when the study holds ``n_trials`` finished trials (or this worker stops)."""
        while not self._stop.is_set():
            with self._lock:
                self._close_stale(study)
                trials = [t for t in study.get_trials(deepcopy=False) if counts(t)]
                finished = sum(t.state != TrialState.RUNNING for t in trials)
                if finished >= self.n_trials:
                    return None
                if len(trials) < self.n_trials:
                    trial = study.ask(fixed_distributions=self.distributions)
                    study._storage.set_trial_system_attr(trial._trial_id, WORKER, self.worker)
                    ahead = sum(counts(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number)
                    if ahead < self.n_trials:
                        for name, value in self.fixed.items():
                            trial.set_user_attr(name, value)
                        return trial
                    # another worker asked at the same moment and holds the last place: give this one up
                    trial.set_user_attr("aelab_status", "surplus")
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    continue
            self._stop.wait(self.poll)
        return None

    # ------------------------------------------------------------------------- the slots
    def _overrides(self, trial: optuna.trial.Trial) -> list[str]:
        values = {**trial.params, **self.fixed}
        return [
            *(f"{name}={value}" for name, value in values.items()),
            f"search.storage={quote_override(self.storage_used)}",
            f"search.study={quote_override(self.study_name_or_default)}",
            f"search.trial={trial.number}",
        ]

    def _slot(self, study: optuna.Study) -> None:
        """Run trials one after another until the study is done: ask, launch (with heartbeats), tell."""
        while (trial := self._next_trial(study)) is not None:
            try:
                with get_heartbeat_thread(trial._trial_id, study._storage):
                    (ret,) = self.launcher.launch([self._overrides(trial)], initial_job_idx=trial.number)
            except BaseException:
                self._stop.set()
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            failure = self._close(study, trial, ret, len(self.directions))
            with self._lock:
                self._closed += 1
                if failure is not None:
                    self._failures.append((trial.number, ret))
                    if len(self._failures) / self._closed > self.max_failure_rate:
                        log.error(
                            "%d of %d trials of this worker failed (hydra.sweeper.max_failure_rate=%s): stopping",
                            len(self._failures),
                            self._closed,
                            self.max_failure_rate,
                        )
                        self._stop.set()

    def _slots(self) -> int:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        if isinstance(self.launcher, BasicLauncher) and self.n_jobs > 1:
            log.info(
                "hydra.sweeper.n_jobs=%d with Hydra's basic launcher, which runs one job at a time in this process: "
                "one trial at a time (hydra/launcher=joblib runs several, or start more workers)",
                self.n_jobs,
            )
            return 1
        return max(1, self.n_jobs)

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.distributions, self.fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        if getattr(self.sampler, "func", None) is optuna.samplers.GridSampler:  # _partial_: needs the space
            choices = {name: grid_choices(name, d) for name, d in self.distributions.items()}
            self.sampler = self.sampler(choices)
            size = 1
            for values in choices.values():
                size *= len(values)
            self.n_trials = min(self.n_trials, size)
        from aelab.callbacks.pruning import is_journal

        storage = str(self.storage) if self.storage else default_storage(sweep_dir)
        if is_journal(storage):  # an absolute path: a job's working directory may be another
            storage = str(Path(storage).expanduser().resolve())
            Path(storage).parent.mkdir(parents=True, exist_ok=True)
        self.storage_used = storage
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search logs what it does itself
        study = self._open(storage)
        with self._lock:
            self._close_stale(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(counts(t) and t.state != TrialState.RUNNING for t in trials)
        running = sum(counts(t) and t.state == TrialState.RUNNING for t in trials)
        slots = self._slots()
        log.info(
            "Optuna study %r in %s: %d trial%s finished earlier, %d running in other workers, %d to go "
            "(n_trials=%d; this worker runs %d at once)",
            study.study_name,
            storage,
            done,
            "" if done == 1 else "s",
            running,
            max(0, self.n_trials - done - running),
            self.n_trials,
            slots,
        )
        if slots == 1:
            self._slot(study)  # in this thread: an in-process job may need the main thread (signals)
        else:
            errors: list[BaseException] = []

            def slot() -> None:
                try:
                    self._slot(study)
                except BaseException as exc:  # noqa: BLE001 — re-raised in the main thread below
                    errors.append(exc)

            threads = [threading.Thread(target=slot, name=f"trial slot {i}", daemon=True) for i in range(slots)]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.5)  # (a join with a timeout lets Ctrl-C through)
            except KeyboardInterrupt:
                self._stop.set()
                raise
            if errors:
                raise errors[0]
        self._save_results(study)
        if self._failures and len(self._failures) / max(1, self._closed) > self.max_failure_rate:
            self._failures[0][1].return_value  # noqa: B018 — JobReturn raises the job's own error

    @staticmethod
    def _close(study: optuna.Study, trial: optuna.trial.Trial, ret: Any, n_objectives: int) -> str | None:
        """Tell the study how ``trial``'s job ended; returns the failure's reason, or None."""
        attrs = study._storage.get_trial(trial._trial_id).user_attrs  # (a running trial is read, not cached)
        try:
            if attrs.get("aelab_status") == "pruned":
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                log.info("trial %d pruned at epoch %s", trial.number, attrs.get("aelab_pruned_epoch"))
                return None
            try:
                value = ret.return_value
                values = [float(value)] if n_objectives == 1 else [float(v) for v in value]
                if len(values) != n_objectives or any(v != v for v in values):
                    raise ValueError(f"the job returned {value!r}")
            except Exception as exc:  # noqa: BLE001 — a failed job (its error is in its run folder) or no objective
                trial.set_user_attr("aelab_status", "failed")
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                log.warning("trial %d failed: %s", trial.number, exc)
                return str(exc)
            study.tell(trial, values=values, skip_if_finished=True)
        except RuntimeError as exc:  # the grid sampler stops the study when its grid is done: nothing to stop here
            if "Study.stop" not in str(exc):
                raise
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        return None

    def _save_results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml``: the study as this worker leaves it (the last worker's has every trial)."""
        every = study.get_trials(deepcopy=False)
        surplus = sum(t.user_attrs.get("aelab_status") == "surplus" for t in every)
        trials = [t for t in every if t.user_attrs.get("aelab_status") != "surplus"]  # given up unrun, never failed
        counted = {state.name.lower(): sum(t.state == state for t in trials) for state in FINISHED}
        if surplus:
            counted["surplus"] = surplus
        results: dict[str, Any] = {"name": "optuna", "study": study.study_name, "trials": counted}
        if any(interrupted(t) for t in trials):
            results["trials"]["interrupted"] = sum(interrupted(t) for t in trials)  # (among the failed)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete and len(self.directions) == 1:
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
        with atomic_path(Path(str(self.config.hydra.sweep.dir)) / "optimization_results.yaml") as tmp:
            OmegaConf.save(OmegaConf.create(results), tmp)
