"""Hydra callback that names run and sweep folders and summarises sweeps.

* A single run gets ``outputs/runs/<time>_<model>_<data>``; when that folder
  already exists (two runs in the same second), ``_2``, ``_3``, ... is added.
* A sweep gets ``outputs/sweeps/<sweep.name or time>``:

  - ``sweep.name=X`` uses ``outputs/sweeps/X``, continuing it if it exists;
  - ``sweep.resume=true`` without a name reuses the latest sweep folder that
    was started with the same overrides;
  - otherwise a fresh folder (suffixed when the name is taken).

  Jobs skip themselves when their folder holds a completed ``metrics.json``,
  so continuing a sweep never retrains or overwrites finished jobs.
* When a sweep ends, ``sweep_summary.json`` lists each job as completed,
  failed, skipped (completed earlier) or missing, and the counts are printed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from aelab.config.checks import accelerator_problem, check_config, local_ddp_sweep_problem, output_problems
from aelab.store.files import write_json_atomic
from aelab.store.locks import FolderInUse, is_extra_rank, lock_folder
from aelab.store.record import METRICS_FILE, RunRecord, now_iso
from aelab.store.runs import is_run_dir

log = logging.getLogger("aelab.sweep")

SWEEP_FILE = "aelab_sweep.yaml"
SUMMARY_FILE = "sweep_summary.json"
_IDENTITY_EXCLUDES = ("sweep.resume=", "sweep.name=")


def _unique_dir(path: Path) -> Path:
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


def quote_override(value: str) -> str:
    """Quote a value for a Hydra override (commas, brackets and colons stay literal)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """The keys of the swept overrides (``a=1,2``, ``range(...)``) and of the constant ones."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept, constant = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        (swept if override.is_sweep_override() else constant).append(override.key_or_group)
    return swept, constant


def _has_override(config: DictConfig, key: str) -> bool:
    return any(str(o).split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


def sweep_identity(overrides: list[str]) -> list[str]:
    """The overrides that identify a sweep (without the sweep.* bookkeeping keys), sorted."""
    return sorted(o for o in overrides if not o.startswith(_IDENTITY_EXCLUDES))


def find_previous_sweep(sweeps_dir: Path, overrides: list[str]) -> Path | None:
    """The latest sweep folder under ``sweeps_dir`` started with the same overrides."""
    want = sweep_identity(overrides)
    matches = []
    for marker in sweeps_dir.glob(f"*/{SWEEP_FILE}"):
        try:
            info = OmegaConf.to_container(OmegaConf.load(marker))
        except Exception:  # noqa: BLE001 — an unreadable marker is not a sweep to continue
            continue
        if sweep_identity(list(info.get("overrides", []))) == want:
            matches.append((marker.stat().st_mtime, marker.parent))
    return max(matches)[1] if matches else None


def classify_jobs(sweep_dir: Path, started: float) -> dict[str, list[dict[str, Any]]]:
    """Sort a sweep's job folders by what happened to them since ``started`` (a timestamp)."""
    groups: dict[str, list[dict[str, Any]]] = {
        "completed": [],
        "pruned": [],
        "failed": [],
        "skipped": [],
        "stale": [],
        "missing": [],
    }
    for cfg_file in sorted(sweep_dir.glob("**/.hydra/config.yaml")):
        job = cfg_file.parent.parent
        metrics = RunRecord.read(job)
        name = str(job.relative_to(sweep_dir))
        if metrics is None:
            groups["missing"].append({"job": name, "reason": f"no {METRICS_FILE} (killed before it was written?)"})
            continue
        status = metrics.get("status")
        ran_now = float(metrics.get("finished_at_unix") or 0) >= started
        entry = {"job": name, "status": status}
        if status == "completed":
            groups["completed" if ran_now else "skipped"].append(entry)
        elif status == "pruned":
            groups["pruned"].append(entry)
        elif (
            metrics.live_status() == "interrupted" and status == "running" and not ran_now
        ):  # a killed earlier process's, not rerun
            entry["error"] = "interrupted in an earlier process (killed?); not run again"
            groups["stale"].append(entry)
        else:
            entry["error"] = metrics.get("error")
            groups["failed"].append(entry)
    return groups


def never_started_jobs(sweep_dir: Path) -> list[str]:
    """The job folders a grid sweep (basic or joblib launcher) was to create but did not: the sweep was stopped first.

    Read from the sweep's ``aelab_sweep.yaml`` (its overrides) and expanded the way Hydra's basic
    sweeper expands them, each job named as Hydra names its folder. Optuna searches (their jobs
    are not known ahead) and sweeps without swept keys give an empty list.
    """
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    marker = sweep_dir / SWEEP_FILE
    try:
        overrides = [str(o) for o in OmegaConf.load(marker).get("overrides", [])]
        parser = OverridesParser.create()
        parsed = parser.parse_overrides(overrides)
    except Exception:  # noqa: BLE001 — no marker, or overrides this Hydra cannot read: nothing to say
        return []
    if any(o.key_or_group in ("hparams_search", "hydra/sweeper") for o in parsed):
        return []
    swept = [o for o in parsed if o.is_sweep_override()]
    if not swept or any(o.is_interval_sweep() for o in swept):
        return []
    from aelab import config_dir

    defaults = OmegaConf.load(config_dir() / "hydra" / "default.yaml").job.config.override_dirname.exclude_keys
    excluded = {o.key_or_group for o in parsed if not o.is_sweep_override()} | {str(k) for k in defaults}
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    names = [get_overrides_dirname(parser.parse_overrides(list(job)), sorted(excluded), ",", "=") for job in jobs]
    return [n for n in names if not (sweep_dir / n).is_dir()]


def swept_value_problems(overrides: list[str]) -> list[str]:
    """Every invalid value of a swept key (``model.bottleneck=2,0,8``), found before the first job starts.

    Each value of each swept key is composed with the other keys at their first value and
    checked like a single run's config; optimizer-style ranges (Optuna's ``interval``) are left to the jobs.
    """
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from aelab.config.checks import config_problems

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 — Hydra reports bad override syntax itself
        return []
    swept = {}
    for override in parsed:
        if override.is_sweep_override() and not override.is_interval_sweep():
            swept[override.get_key_element()] = [str(v) for v in override.sweep_string_iterator()]
    if not swept:
        return []
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    firsts = {key: values[0] for key, values in swept.items()}
    problems: list[str] = []
    for key, values in swept.items():
        for value in values:
            chosen = [f"{k}={firsts[k] if k != key else value}" for k in swept]
            try:
                cfg = compose(config_name="config", overrides=fixed + chosen)
                found = config_problems(cfg, fixed + chosen)[0]
            except Exception as exc:  # noqa: BLE001 — e.g. an unknown group option
                found = [str(exc).splitlines()[0]]
            problems += [f"{key}={value} (one of the swept values): {p}" for p in found if p not in problems]
    return problems


def _min_free_mb(config: DictConfig) -> float:
    return float(OmegaConf.select(config, "paths.min_free_mb", default=0) or 0)


def _exit_on(problems: list[str]) -> None:
    if problems:
        raise SystemExit("aelab-train: error: " + "\n".join(problems))


def prepare_run_dir(config: DictConfig) -> Path:
    """Check the config, then choose and create the run folder of a single run (``aelab-train``, ``aelab.train()``).

    A bad config exits before any folder exists. The folder is ``hydra.run.dir`` when given explicitly,
    the folder to continue (``resume=<folder>``), the named one (``name=``), for a run that ``wandb agent``
    started ``outputs/sweeps/wandb-<sweep id>/<run id>``, or a fresh unique one.
    """
    check_config(config)  # before any folder exists: a bad config leaves nothing behind
    _exit_on([p for p in [accelerator_problem(config.get("trainer")), _size_problem(config)] if p])
    run_dir = Path(str(config.hydra.run.dir))
    if _has_override(config, "hydra.run.dir"):
        _exit_on(output_problems(run_dir, _min_free_mb(config)))
        _own(run_dir, "run folder")
        return run_dir  # an explicit folder: used as it is
    resume = config.get("resume")
    if resume not in (None, "auto", "never"):
        chosen = Path(str(resume)).expanduser().resolve()  # continue that run folder
        if not is_run_dir(chosen):
            raise SystemExit(f"aelab-train: error: resume={resume} is not an aelab run folder (no .hydra/config.yaml)")
    elif config.get("name"):
        chosen = Path(str(config.paths.output_dir)) / "runs" / str(config.name)  # the same name: the same folder
    elif os.environ.get("WANDB_SWEEP_ID") and os.environ.get(
        "WANDB_RUN_ID"
    ):  # started by `wandb agent`: one folder per sweep
        chosen = (
            Path(str(config.paths.output_dir))
            / "sweeps"
            / f"wandb-{os.environ['WANDB_SWEEP_ID']}"
            / os.environ["WANDB_RUN_ID"]
        )
    else:
        chosen = None  # a fresh, unique <time>_<model>_<data> folder
    _exit_on(output_problems((chosen or run_dir).parent, _min_free_mb(config)))
    if chosen is None:
        chosen = _unique_dir(run_dir)
    chosen.mkdir(parents=True, exist_ok=True)
    _own(chosen, "run folder")  # before Hydra writes .hydra/ into it
    return chosen


def _size_problem(config: DictConfig) -> str | None:
    """A model too big for this machine's memory or the output disk (see :func:`aelab.run.build.size_problem`)."""
    from aelab.errors import ConfigError, find_aelab_error
    from aelab.run.build import model_size_problem

    try:
        return model_size_problem(config, Path(str(config.paths.output_dir)))
    except Exception as exc:  # noqa: BLE001 — an estimate that cannot be made is left to the run's own checks
        cause = find_aelab_error(exc)  # Hydra wraps a component's own check (model.code_dim=3 with bottleneck 32)
        if isinstance(cause, ConfigError):
            return str(cause)  # refused before the folder
        log.debug("no size estimate before the run folder: %s", exc)
        return None


def _own(folder: Path, what: str):
    """This process's lock on ``folder``; another live owner ends the command with a message naming it."""
    try:
        return lock_folder(folder, what)
    except FolderInUse as exc:
        raise SystemExit(f"aelab-train: error: {exc}") from None


class RunFolderCallback(Callback):
    """Unique run folders, resumable sweep folders, and the end-of-sweep summary."""

    @staticmethod
    def print_jobs(sweep_dir: Path, groups: dict, config: DictConfig) -> None:
        """The table of the sweep's jobs (swept values, objective, status) and the aelab-compare command."""
        from rich.console import Console

        from aelab.run.summary import sweep_summary

        jobs = [
            {**j, "skipped": kind == "skipped"}
            for kind in ("completed", "skipped", "pruned", "failed", "stale")
            for j in groups[kind]
        ]
        jobs += [{"job": j["job"], "status": "missing"} for j in groups["missing"]]
        renderable, plain = sweep_summary(
            sweep_dir, sorted(jobs, key=lambda j: j["job"]), OmegaConf.select(config, "optimized_metric")
        )
        Console(soft_wrap=True).print(renderable)

    def __init__(self) -> None:
        self.started = time.time()
        self.lock = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_extra_rank():
            return  # a DDP worker started by Lightning: it joins rank 0's run folder (hydra.run.dir)
        run_dir = prepare_run_dir(config)
        with read_write(config.hydra.run), open_dict(config.hydra.run):
            config.hydra.run.dir = str(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        check_config(config)  # the base config
        _exit_on(
            swept_value_problems([str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)])
        )
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        problem = local_ddp_sweep_problem(config.get("trainer"), launcher)
        _exit_on([problem] if problem else [])
        _exit_on(output_problems(Path(str(config.paths.output_dir)) / "sweeps", _min_free_mb(config)))
        overrides = [
            str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        ]  # as typed: ${...} unresolved
        sweeps_dir = Path(str(config.paths.output_dir)) / "sweeps"
        if _has_override(config, "hydra.sweep.dir"):
            sweep_dir = Path(str(config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
        elif config.sweep.name:
            sweep_dir = sweeps_dir / str(config.sweep.name)
            sweep_dir.mkdir(parents=True, exist_ok=True)
        elif config.sweep.resume:
            sweep_dir = find_previous_sweep(sweeps_dir, overrides)
            if sweep_dir is None:
                raise SystemExit(
                    f"aelab-train: error: sweep.resume=true, but no sweep under {sweeps_dir} was started "
                    "with these overrides. Run without sweep.resume, or name the folder with sweep.name=..."
                )
            log.info("resuming sweep %s", sweep_dir)
        else:
            sweep_dir = _unique_dir(Path(str(config.hydra.sweep.dir)))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(sweep_dir)
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quote_override(str(sweep_dir))}")
            # Job folders are named from the swept keys only: the constant overrides are the same for all.
            swept, constant = split_overrides(overrides)
            swept += list((config.hydra.sweeper.get("params") or {}).keys())  # sweeps declared in a config
            excludes = list(config.hydra.job.config.override_dirname.exclude_keys) + constant
            config.hydra.overrides.hydra.append(
                "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(quote_override(k) for k in excludes) + "]"
            )
            default_subdir = (
                OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
                == "${hydra.job.override_dirname}"
            )
            if not swept and default_subdir and not _has_override(config, "hydra.sweep.subdir"):
                config.hydra.overrides.hydra.append("hydra.sweep.subdir='job${hydra.job.num}'")
        self.lock = _own(sweep_dir, "sweep folder")  # one sweep process per folder (its jobs lock their own folders)
        marker = sweep_dir / SWEEP_FILE
        if not marker.exists():
            OmegaConf.save(OmegaConf.create({"overrides": overrides, "started_at": now_iso()}), marker)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        groups = classify_jobs(sweep_dir, self.started)
        counts = {k: len(v) for k, v in groups.items()}
        write_json_atomic(
            sweep_dir / SUMMARY_FILE,
            {"sweep_dir": str(sweep_dir), "finished_at": now_iso(), "counts": counts, **groups},
        )
        lines = [
            f"sweep {sweep_dir}: {counts['completed']} done, {counts['failed']} failed, {counts['skipped']} skipped "
            f"(completed earlier)"
            + (f", {counts['pruned']} pruned" if counts["pruned"] else "")
            + (f", {counts['missing']} without metrics.json" if counts["missing"] else "")
        ]
        for entry in groups["failed"]:
            lines.append(f"  failed: {entry['job']}: {entry.get('error')}")
        for entry in groups["missing"]:
            lines.append(f"  missing: {entry['job']}: {entry['reason']}")
        for entry in groups["stale"]:
            lines.append(f"  earlier: {entry['job']}: {entry['error']}")
        log.info("\n".join(lines))
        self.print_jobs(sweep_dir, groups, config)
        if self.lock is not None:
            self.lock.release()
        from aelab.run.session import fast_exit

        fast_exit()
        if groups["failed"]:  # the sweep ran every job, but a script waiting on it must see that some failed
            names = ", ".join(e["job"] for e in groups["failed"])
            raise SystemExit(
                f"aelab-train: {len(groups['failed'])} of the sweep's jobs failed: {names} "
                f"(errors above; each job's error.log has its traceback)"
            )
