"""The Hydra callback of ``aelab-train``: which folder a run or sweep gets, the pre-run step, the end-of-sweep summary.

* A single run gets ``outputs/runs/<time>_<model>_<data>`` (``_2``, ``_3``, ... when two runs start
  in the same second), ``outputs/runs/<name>`` with ``name=``, the folder of ``resume=<folder>``, or
  ``hydra.run.dir`` when given. Its pre-run step (:func:`aelab.run.precheck.prepare`) runs here,
  before the folder exists, so a refused run leaves nothing behind.
* A sweep gets ``outputs/sweeps/<sweep.name or time>`` (``sweep.resume=true``: the latest sweep
  started with the same overrides). Its base config and every job's config are checked first
  (:func:`aelab.run.sweeps.sweep_problems`), and job folders of an earlier sitting whose config
  changed are refused (:func:`aelab.run.sweeps.changed_jobs`).
* When a sweep ends, ``sweep_summary.json`` lists each job as completed, failed, skipped (completed
  earlier) or missing, and a table of the jobs is printed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from aelab.config.checks import task_overrides
from aelab.errors import AelabError, ConfigError, RunFolderError, find_aelab_error
from aelab.run import sweeps
from aelab.run.compose import quote_override
from aelab.run.precheck import Refused, config_problems, machine_problems, prepare, refuse
from aelab.store.files import refuse_links, remove_temporaries, write_json_atomic
from aelab.store.locks import FolderInUse, is_extra_rank, lock_folder, release_folder
from aelab.store.record import now_iso
from aelab.store.runs import is_run_dir

log = logging.getLogger("aelab.sweep")


def unique_dir(path: Path) -> Path:
    """Create and return ``path``, or ``path_2``, ``path_3``... if it exists (atomic mkdir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}_{n}")


def own(folder: Path, what: str = "run folder") -> Path:
    """Lock ``folder`` for this process and remove what a dead owner left half-written; refuse a live owner."""
    try:
        lock_folder(folder, what)
    except FolderInUse as exc:
        raise Refused(exc) from None
    for stray in remove_temporaries(folder):
        log.info("removed %s, left half-written by an earlier process", stray)
    return folder


def _has_override(config: DictConfig, key: str) -> bool:
    return any(str(o).split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


def run_folder(config: DictConfig) -> tuple[Path, bool]:
    """The folder of a single run and whether it is a fresh one (created unique when the run goes ahead)."""
    output = Path(str(config.paths.output_dir))
    resume = config.get("resume")
    if _has_override(config, "hydra.run.dir"):
        return Path(str(config.hydra.run.dir)), False  # an explicit folder: used as it is
    if resume not in (None, "auto", "never"):
        chosen = Path(str(resume)).expanduser().resolve()  # continue that run folder
        if not is_run_dir(chosen):
            raise Refused(RunFolderError(f"resume={resume} is not an aelab run folder (no .hydra/config.yaml)"))
        return chosen, False
    if config.get("name"):
        return output / "runs" / str(config.name), False  # the same name: the same folder
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):  # started by `wandb agent`
        return output / "sweeps" / f"wandb-{os.environ['WANDB_SWEEP_ID']}" / os.environ["WANDB_RUN_ID"], False
    return Path(str(config.hydra.run.dir)), True  # a fresh, unique <time>_<model>_<data> folder


def _surfacing(hook):
    """Let an exception of a hook stop the command: Hydra turns a callback's exceptions into warnings and runs the
    job anyway, so an aelab error becomes :class:`Refused` (its one line) and anything else a traceback and exit 1."""

    @functools.wraps(hook)
    def wrapped(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            hook(self, config, **kwargs)
        except Exception as exc:  # noqa: BLE001 — re-raised as SystemExit, the one kind Hydra lets through
            error = find_aelab_error(exc)
            if error is not None:
                raise Refused(error) from None
            traceback.print_exc()
            raise SystemExit(f"aelab-train: internal error in {hook.__name__} ({type(exc).__name__}: {exc})") from None

    return wrapped


class RunFolderCallback(Callback):
    """Run and sweep folders, the pre-run step, and the end-of-sweep summary (see the module docstring)."""

    def __init__(self) -> None:
        self.started = time.time()

    @_surfacing
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_extra_rank():
            return  # a DDP worker started by Lightning: it joins rank 0's run folder (hydra.run.dir)
        refuse(config_problems(config))  # before anything else: a bad config leaves nothing behind
        run_dir, fresh = run_folder(config)
        run_dir = Path(os.path.abspath(run_dir))

        def choose() -> Path:
            return own(unique_dir(run_dir) if fresh else run_dir)

        prepared = prepare(config, run_dir, choose, checked=True, fresh=fresh)
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = str(prepared.run_dir)

    @_surfacing
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from aelab.config.checks import local_ddp_sweep_problem

        self.started = time.time()
        if not OmegaConf.is_dict(config.get("sweep")):  # sweep=sw: a value where the group's options belong
            refuse(
                [
                    f"sweep={OmegaConf.select(config, 'sweep')!r} is not one of the sweep's options: name the sweep "
                    "with sweep.name=<name> (sweep.resume=true continues the latest)"
                ]
            )
        overrides = task_overrides(config)
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        ddp = local_ddp_sweep_problem(config.get("trainer"), launcher)
        sweeps_dir = Path(str(config.paths.output_dir)) / "sweeps"
        refuse(sweeps.sweep_problems(config, overrides) + ([ddp] if ddp else []))
        if sweeps.is_search(config):  # the search's own options, sampler, space and storage: before any folder
            from aelab.run.search import search_problems

            refuse(search_problems(config, overrides), "the search")
        refuse(machine_problems(config, sweeps_dir))  # (creates the output folder: only for a sweep that can run)
        if _has_override(config, "hydra.sweep.dir"):
            sweep_dir = Path(str(config.hydra.sweep.dir))
        elif config.sweep.name:
            sweep_dir = sweeps_dir / str(config.sweep.name)
        elif config.sweep.resume:
            sweep_dir = sweeps.find_previous_sweep(sweeps_dir, overrides)
            if sweep_dir is None:
                raise Refused(
                    ConfigError(
                        f"sweep.resume=true, but no sweep under {sweeps_dir} was started with these overrides. "
                        "Run without sweep.resume, or name the folder with sweep.name=..."
                    )
                )
            log.info("resuming sweep %s", sweep_dir)
        else:
            sweep_dir = unique_dir(Path(str(config.hydra.sweep.dir)))
        # job folders are named from the swept keys only: the constant overrides are the same for all
        parsed = sweeps._parse(overrides)
        swept = [o.key_or_group for o in parsed if o.is_sweep_override()]
        swept += list((config.hydra.sweeper.get("params") or {}).keys())  # sweeps declared in a config
        excludes = list(config.hydra.job.config.override_dirname.exclude_keys)
        excludes += [o.key_or_group for o in parsed if not o.is_sweep_override()]
        if sweep_dir.is_dir() or sweep_dir.is_symlink():  # before any job's log opens a file there
            try:
                refuse_links(sweep_dir)
            except AelabError as exc:
                raise Refused(exc) from None
        changed = sweeps.changed_jobs(config, sweep_dir, overrides, excludes) if sweep_dir.is_dir() else []
        if changed:
            raise Refused(
                ConfigError(
                    f"the sweep folder {sweep_dir} holds jobs run with another config; continuing or skipping them "
                    "now would mix two experiments:\n" + "\n".join(changed) + "\nStart a new sweep instead "
                    "(another sweep.name=, or none), or continue these jobs with the new values anyway: "
                    "on_config_change=continue"
                )
            )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(sweep_dir)
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quote_override(str(sweep_dir))}")
            config.hydra.overrides.hydra.append(
                "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(quote_override(k) for k in excludes) + "]"
            )
            default_subdir = (
                OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
                == "${hydra.job.override_dirname}"
            )
            if not swept and default_subdir and not _has_override(config, "hydra.sweep.subdir"):
                config.hydra.overrides.hydra.append("hydra.sweep.subdir='job${hydra.job.num}'")
        if not sweeps.is_search(config):  # an Optuna search's folder takes any number of workers
            own(sweep_dir, "sweep folder")  # one sweep process per folder (its jobs lock their own folders)
        marker = sweep_dir / sweeps.SWEEP_FILE
        if not marker.exists():
            info = {"overrides": overrides, "exclude_keys": excludes, "started_at": now_iso()}
            OmegaConf.save(OmegaConf.create(info), marker)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from aelab.run.session import fast_exit
        from aelab.run.summary import print_sweep_summary

        sweep_dir = Path(str(config.hydra.sweep.dir))
        groups = sweeps.classify_jobs(sweep_dir, self.started)
        counts = {k: len(v) for k, v in groups.items()}
        summary = {"sweep_dir": str(sweep_dir), "finished_at": now_iso(), "counts": counts, **groups}
        write_json_atomic(sweep_dir / sweeps.SUMMARY_FILE, summary)
        print_sweep_summary(sweep_dir, groups, OmegaConf.select(config, "optimized_metric"))
        release_folder(sweep_dir)
        fast_exit()
        if groups["failed"]:  # the sweep ran every job, but a script waiting on it must see that some failed
            names = ", ".join(e["job"] for e in groups["failed"])
            raise SystemExit(
                f"aelab-train: {len(groups['failed'])} of the sweep's jobs failed: {names} "
                "(errors above; each job's error.log has its traceback)"
            )
