"""A sweep's jobs before, while and after they run: expanded from the overrides, checked, and classified.

A grid sweep (``aelab-train -m model.bottleneck=2,4,8 seed=0,1``) is expanded the way Hydra's
basic sweeper expands it, each job named as Hydra names its folder (:func:`grid_jobs`). Before
the first job starts, :func:`sweep_problems` checks the base config and every job's config —
each distinct choice of config groups composed once, the swept values set into it — so a bad
value or a broken cross-field rule in any combination is refused with nothing run, and
:func:`changed_jobs` finds job folders of an earlier sitting that the new sweep would continue
or skip under another config. After the sweep, :func:`classify_jobs` sorts the job folders by
what happened to them, and :func:`never_started_jobs` names those a stopped sweep never began.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.store.record import METRICS_FILE, RunRecord

log = logging.getLogger("aelab.sweep")

SWEEP_FILE = "aelab_sweep.yaml"
SUMMARY_FILE = "sweep_summary.json"
MAX_CHECKED_JOBS = 512  # more jobs than this: each swept value is checked alone (with the others at their first)
_IDENTITY_EXCLUDES = ("sweep.resume=", "sweep.name=")


# ----------------------------------------------------------------------------- expanding
def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides)


def grid_jobs(overrides: list[str], exclude_keys: list[str]) -> list[tuple[str, list[str]]]:
    """``(job folder name, the job's overrides)`` for every job of a grid sweep (empty for ranges/Optuna)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = _parse(overrides)
    if any(o.key_or_group in ("hparams_search", "hydra/sweeper") for o in parsed):
        return []
    swept = [o for o in parsed if o.is_sweep_override()]
    if not swept or any(o.is_interval_sweep() for o in swept):
        return []
    excluded = sorted({o.key_or_group for o in parsed if not o.is_sweep_override()} | set(exclude_keys))
    jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return [(get_overrides_dirname(_parse(job), excluded, ",", "="), job) for job in jobs]


def job_configs(cfg: DictConfig, jobs: list[list[str]]):
    """``(job overrides, composed config or the composition's error)`` for each job, composing each distinct choice
    of config groups once (with the sweep's search path) and setting the other swept values into a copy."""
    from aelab.run.compose import compose_like

    groups = set((OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}).keys())
    composed: dict[tuple[str, ...], Any] = {}
    for job in jobs:
        parsed = _parse(job)
        is_group = [o.key_or_group in groups or "/" in o.key_or_group for o in parsed]
        base = tuple(o.input_line for o, g in zip(parsed, is_group) if g or not o.is_sweep_override())
        if base not in composed:
            try:
                added = [o.input_line for o in parsed if o.is_add() and o.input_line not in base]
                composed[base] = compose_like(cfg, [*base, *added])  # a "+key" given once: Hydra refuses it twice
            except Exception as exc:  # noqa: BLE001 — e.g. an unknown group option: reported for the job
                composed[base] = exc
        found = composed[base]
        if isinstance(found, Exception):
            yield job, found
            continue
        job_cfg = copy.deepcopy(found)
        for o, g in zip(parsed, is_group):
            if not g and o.input_line not in base:
                OmegaConf.update(job_cfg, o.key_or_group, o.value(), merge=False, force_add=o.is_add())
        yield job, job_cfg


# ----------------------------------------------------------------------------- checking before the first job
def sweep_problems(cfg: DictConfig, overrides: list[str], each_value: bool = False) -> list[str]:
    """The base config's problems and those of every job of the sweep, each named by the job's swept values
    (``each_value``: each swept value once, the other keys at their first value, instead of every combination)."""
    from aelab.errors import find_aelab_error
    from aelab.run.precheck import config_problems

    problems = config_problems(cfg, overrides) + twice_given(overrides)
    if problems:
        return problems
    jobs = [job for _, job in grid_jobs(overrides, [])]
    if len(jobs) > MAX_CHECKED_JOBS or (each_value and jobs):
        jobs = _one_value_at_a_time(overrides)
    swept = {o.key_or_group for o in _parse(overrides) if o.is_sweep_override()}
    where: dict[str, list[str]] = {}  # problem → the jobs that have it
    for job, job_cfg in job_configs(cfg, jobs):
        values = ",".join(o for o in job if o.lstrip("+~").split("=", 1)[0] in swept)
        if isinstance(job_cfg, Exception):
            found = [str(find_aelab_error(job_cfg) or job_cfg).splitlines()[0]]
        else:
            found = config_problems(job_cfg, job)
        for problem in found:
            if problem not in problems:
                where.setdefault(problem, []).append(values)
    for problem, names in where.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        problems.append(f"{problem} (in the sweep's job{'s' if len(names) > 1 else ''} {shown})")
    return problems


def twice_given(overrides: list[str]) -> list[str]:
    """A key given more than once, one of them swept (``model.bottleneck=4 ... model.bottleneck=2,8``): Hydra would
    run a job in the sweep folder itself and refuse the others, ending with nothing done and exit 0."""
    from aelab import config_dir

    parsed = _parse(overrides)
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()}  # a group chosen again: the swept choice wins
    swept = {o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group not in groups}
    seen: dict[str, list[str]] = {}
    for o in parsed:
        if o.key_or_group in swept:
            seen.setdefault(o.key_or_group, []).append(o.input_line)
    return [
        f"{key} is given {len(lines)} times ({', '.join(lines)}): give it once, with every value to sweep"
        for key, lines in seen.items()
        if len(lines) > 1
    ]


def _one_value_at_a_time(overrides: list[str]) -> list[list[str]]:
    parsed = _parse(overrides)
    swept = {o.key_or_group: [str(v) for v in o.sweep_string_iterator()] for o in parsed if o.is_sweep_override()}
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    first = {k: v[0] for k, v in swept.items()}
    return [fixed + [f"{k}={first[k] if k != key else value}" for k in swept] for key in swept for value in swept[key]]


def changed_jobs(cfg: DictConfig, sweep_dir: Path, overrides: list[str], exclude_keys: list[str]) -> list[str]:
    """Job folders of an earlier sitting that this sweep would continue or skip under another config, with the
    changes."""
    from aelab.errors import ConfigError
    from aelab.run.precheck import adopt_recorded_split
    from aelab.store.fingerprint import changes_since, describe_changes

    if str(cfg.get("on_config_change", "refuse")) == "continue":
        return []
    named = [(name, job) for name, job in grid_jobs(overrides, exclude_keys) if RunRecord.read(sweep_dir / name)]
    found = []
    for (name, job), (_, job_cfg) in zip(named, job_configs(cfg, [job for _, job in named])):
        recorded = sweep_dir / name / ".hydra" / "config.yaml"
        if isinstance(job_cfg, Exception) or not recorded.is_file():
            continue
        adopt_recorded_split(job_cfg, recorded, [*overrides, *job])  # as the job itself will (run/precheck.py)
        try:
            changes = changes_since(recorded, job_cfg)
        except ConfigError as exc:
            found.append(f"{name}: {exc}")
            continue
        if changes:
            found.append(f"{name}:\n{describe_changes(changes, limit=4)}")
    return found


def is_search(config: DictConfig) -> bool:
    """Whether the sweep is aelab's Optuna search: its workers share the sweep folder, the study coordinates them
    (:mod:`aelab.run.search`) and each job locks its own folder."""
    return str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "").endswith(".AelabOptunaSweeper")


# ----------------------------------------------------------------------------- finding and classifying
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
    kinds = ("completed", "pruned", "failed", "skipped", "stale", "missing")
    groups: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for marker in sorted(sweep_dir.glob(f"**/{METRICS_FILE}")) + sorted(sweep_dir.glob("**/.hydra/config.yaml")):
        job = marker.parent.parent if marker.name == "config.yaml" else marker.parent
        name = str(job.relative_to(sweep_dir))
        if job == sweep_dir or any(e["job"] == name for g in groups.values() for e in g):
            continue
        record, problem = RunRecord.read_with_problem(job)
        if record is None:
            groups["missing"].append({"job": name, "reason": f"{problem} (killed before it was written?)"})
            continue
        status = record.get("status")
        ran_now = float(record.get("finished_at_unix") or 0) >= started
        entry = {"job": name, "status": status}
        if status == "completed":
            groups["completed" if ran_now else "skipped"].append(entry)
        elif status == "pruned":
            groups["pruned"].append(entry)
        elif record.live_status() == "interrupted" and status == "running" and not ran_now:
            entry["error"] = "interrupted in an earlier process (killed?); not run again"
            groups["stale"].append(entry)
        else:
            entry["error"] = record.get("error")
            groups["failed"].append(entry)
    return groups


def never_started_jobs(sweep_dir: Path) -> list[str]:
    """The job folders a grid sweep was to create but did not: the sweep was stopped first.

    Read from the sweep's ``aelab_sweep.yaml`` (its overrides and the keys left out of job names) and
    expanded as Hydra expands them. Optuna searches (their jobs are not known ahead) give an empty list.
    """
    try:
        marker = OmegaConf.load(sweep_dir / SWEEP_FILE)
        overrides = [str(o) for o in marker.get("overrides", [])]
        excluded = [str(k) for k in marker.get("exclude_keys") or _default_excludes()]
        jobs = grid_jobs(overrides, excluded)
    except Exception:  # noqa: BLE001 — no marker, or overrides this Hydra cannot read: nothing to say
        return []
    return [name for name, _ in jobs if not (sweep_dir / name).is_dir()]


def _default_excludes() -> list[str]:
    from aelab import config_dir

    return [
        str(k) for k in OmegaConf.load(config_dir() / "hydra" / "default.yaml").job.config.override_dirname.exclude_keys
    ]
