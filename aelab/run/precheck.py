"""The one pre-run step: everything that can refuse a run, done once, before the run writes anything.

For a single run (``aelab-train``, :func:`aelab.train`) it runs in the Hydra callback's
``on_run_start``, before Hydra creates the run folder or writes ``.hydra/``:

1. the config, read against the components' signatures and their cross-field rules, with no
   torch imported (:func:`config_problems`), the accelerator, and the output folder;
2. the folder's own record: a completed run with the same config is skipped; one with another
   config is refused with the changed keys shown (:mod:`aelab.store.fingerprint`);
3. the parts — data, corruption, model — built once, seeded, with the model's memory and disk
   needs checked before the folder exists (:func:`aelab.run.parts.build_components`);
4. the checkpoint a run continues from, checked readable.

The job (:mod:`aelab.run.job`) then takes the :class:`Prepared` parts instead of building them
again. A sweep checks its base config and every swept value at its start (:func:`sweep_problems`),
and each of its jobs runs steps 1–4 for its own values where it runs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.errors import AelabError, ConfigError, find_aelab_error

log = logging.getLogger("aelab.train")


class Refused(SystemExit):
    """A run refused before it wrote anything: ``aelab-train`` exits with the message, :func:`aelab.train` raises
    ``error``."""

    def __init__(self, error: AelabError, tool: str = "aelab-train"):
        super().__init__(f"{tool}: error: {error}")
        self.error = error


@dataclass
class Prepared:
    """What the pre-run step found and built for one run."""

    run_dir: Path
    parts: Any = None  # aelab.run.parts.Components: datamodule, noise, model
    resume_from: Path | None = None
    resume_step: int = 0  # the optimizer step resume_from was saved at
    skip: Any = None  # the RunRecord of a completed run with the same config: nothing to train
    timing: dict = field(default_factory=dict)
    changes: list = field(default_factory=list)  # (key, before, after) accepted with on_config_change=continue
    adopted: dict = field(default_factory=dict)  # keys taken from the run folder's record (adopt_recorded_split)


_PREPARED: dict[Path, Prepared] = {}  # handed from the Hydra callback to the job, in the same process


def config_problems(cfg: DictConfig, overrides: list[str] | None = None) -> list[str]:
    """Every problem of a composed ``aelab-train`` config that needs no torch: keys, types, ranges, cross-field
    rules."""
    from aelab.config.checks import config_problems as signature_problems

    try:
        return signature_problems(cfg, overrides)[0]
    except Exception as exc:  # noqa: BLE001 — a fault of the check itself must not stop a run (the constructors check)
        log.warning(
            "the early config check failed (%s: %s); the components check their options when built",
            type(exc).__name__,
            exc,
        )
        return []


def machine_problems(cfg: DictConfig, folder: Path) -> list[str]:
    """What this machine lacks for the run: the accelerator it asks for, a writable output folder with space."""
    from aelab.config.checks import accelerator_problem, output_problems

    problem = accelerator_problem(cfg.get("trainer"))
    min_free = float(OmegaConf.select(cfg, "paths.min_free_mb", default=0) or 0)
    return ([problem] if problem else []) + output_problems(folder, min_free)


#: the longest file or folder name most file systems take (bytes)
NAME_MAX = 255


def folder_name_problems(run_dir: Path) -> list[str]:
    """A run folder name the file system cannot hold (``name=`` of 300 characters), said before anything is made."""
    long = [part for part in run_dir.parts if len(os.fsencode(part)) > NAME_MAX]
    if not long:
        return []
    size = len(os.fsencode(long[0]))
    return [
        f"name={long[0][:40]}… is {size} bytes long: a folder name holds at most {NAME_MAX} on this file system; "
        "choose a shorter name="
    ]


def refuse(problems: list[str], what: str = "the config") -> None:
    """Raise :class:`Refused` listing ``problems`` (nothing when there are none)."""
    if not problems:
        return
    lines = "\n".join(f"  - {p}" for p in problems)
    s = "s" if len(problems) > 1 else ""
    raise Refused(ConfigError(f"{what} has {len(problems)} problem{s}; nothing was run:\n{lines}"))


# ----------------------------------------------------------------------------- the folder's own record
def adopt_recorded_split(cfg: DictConfig, recorded: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A run folder written before ``data.split_seed`` existed drew its split from ``data.seed``: continue (or skip)
    it with that split, set in ``cfg``, rather than refuse it as "another config" or train on another split — at
    every sitting (a continued one records ``split_seed: ${seed}``), on every DDP rank. An explicit
    ``data.split_seed=`` on the command line wins (and shows as a change). Returns what was set."""
    from aelab.store.fingerprint import FOLLOWS_SEED, legacy_split_seed

    if cfg.get("data") is None or not recorded.is_file():
        return {}
    if overrides is None:
        overrides = _task_overrides()
    if any(o.lstrip("+~").startswith("data.split_seed=") for o in overrides):
        return {}
    try:
        before = OmegaConf.to_container(OmegaConf.load(recorded), resolve=False)
    except Exception:  # noqa: BLE001 — an unreadable record is reported by folder_verdict, in its words
        return {}
    before = before if isinstance(before, dict) else {}
    value = legacy_split_seed(before)
    written = (before.get("data") or {}).get("split_seed")
    if value is None and written == FOLLOWS_SEED:
        value = FOLLOWS_SEED  # an earlier sitting adopted it and wrote it down: every later one keeps it
    if value is None and written is not None:
        from aelab.store.record import RunRecord

        record = RunRecord.read(recorded.parent.parent)
        if record is not None and record.get("split_seed_adopted") == written:
            value = written  # an earlier sitting fixed it to the seed it was drawn from (below): kept
    if value is None:
        return {}
    if value == FOLLOWS_SEED and before.get("seed") is not None and cfg.get("seed") != before.get("seed"):
        # the split was drawn from the run's recorded seed: another seed now (on_config_change=continue) changes
        # initialisation, order and corruption, not which images are held out
        value = before.get("seed")
    apply_adopted(cfg, {"data.split_seed": value})
    return {"data.split_seed": value}


def apply_adopted(cfg: DictConfig, adopted: dict[str, Any]) -> None:
    """Set the keys :func:`adopt_recorded_split` took from a run's record in ``cfg`` (the job's own copy too)."""
    from omegaconf import open_dict

    for key, value in adopted.items():
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def _task_overrides() -> list[str]:
    """The command line's overrides of this job (none outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except Exception:  # noqa: BLE001 — no Hydra context (a direct call): nothing was given on a command line
        return []


def data_changes(cfg: DictConfig, run_dir: Path, datamodule: Any) -> list[tuple[str, Any, Any]]:
    """The data a run continues on against the data it trained on (``dataset_info.content``): other images in the same
    layout (``paths.data_dir`` pointed elsewhere) are refused like a changed config; ``on_config_change=continue``
    accepts them as a recorded change."""
    from aelab.store.record import RunRecord

    record = RunRecord.read(run_dir)
    before = ((record.get("dataset_info") if record else None) or {}).get("content")
    if not before:
        return []
    try:
        datamodule.setup()
        now = datamodule.content_fingerprint()
    except Exception:  # noqa: BLE001 — data that cannot be read are reported where training reads them, in their words
        return []
    if now == before:
        return []
    change = ("data (content)", before, now)
    if str(cfg.get("on_config_change", "refuse")) != "continue":
        raise Refused(
            ConfigError(
                f"{run_dir} was trained on other data: the images and labels of {datamodule.describe()} differ from "
                f"those it recorded (content {before} → {now}); continuing would mix two datasets in one run. Point "
                "paths.data_dir / data.path at the data it trained on, start a new run (another name=), or continue "
                "anyway: on_config_change=continue (metrics.json records the change)"
            )
        )
    return [change]


def same_start(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` started from the same ``ckpt_path=`` as ``cfg`` (the same command again)."""
    try:
        recorded = OmegaConf.load(run_dir / ".hydra" / "config.yaml").get("ckpt_path")
    except Exception:  # noqa: BLE001 — no or an unreadable record: not the same start
        return False
    return recorded is not None and str(recorded) == str(cfg.get("ckpt_path"))


def folder_verdict(cfg: DictConfig, run_dir: Path) -> tuple[Any, list]:
    """``(the completed record to skip to or None, the config changes accepted)``; refuses a config that differs
    from the run's own unless ``on_config_change=continue``.

    Reads only: the folder's ``metrics.json`` and ``.hydra/config.yaml``. A folder without a record
    (new, or killed before its first record) trains.
    """
    from aelab.store.fingerprint import changes_since, describe_changes
    from aelab.store.record import RunRecord

    record = RunRecord.read(run_dir)
    recorded = run_dir / ".hydra" / "config.yaml"
    if record is not None and cfg.get("ckpt_path") and not same_start(cfg, run_dir):
        raise Refused(
            ConfigError(
                f"{run_dir} holds a run ({record.live_status() or 'started'} after {record.epochs_done()} epochs) "
                f"that did not start from ckpt_path={cfg.ckpt_path}; a run started from it here would write over "
                "this one's checkpoints, config and record: choose another name= (or none, for a fresh folder), or "
                "continue this run itself with the ckpt_path= it started from (or none)"
            )
        )
    if record is None or not recorded.is_file():
        return None, []
    status = record.live_status()
    if str(cfg.get("resume", "auto")) == "never":
        resume_from(cfg, run_dir)  # refuses a folder that holds checkpoints
    try:
        changes = changes_since(recorded, cfg)
    except ConfigError as exc:
        raise Refused(exc) from None
    if changes and str(cfg.get("on_config_change", "refuse")) != "continue":
        if status == "completed":
            way = "a completed run is not trained again (on_config_change=continue leaves it as it is and goes on)"
        else:
            way = (
                "or continue this one with the new values anyway: on_config_change=continue "
                "(metrics.json records the change)"
            )
        done = "completed" if status == "completed" else f"{status or 'started'} after {record.epochs_done()} epochs"
        raise Refused(
            ConfigError(
                f"{run_dir} holds a run {done} with another config; continuing it under this one would mix two "
                f"experiments in one record. Changed (the run's → now):\n{describe_changes(changes)}\n"
                f"Start a new run instead (another name=, or none for a fresh folder); {way}"
            )
        )
    return (record if status == "completed" else None), changes


# ----------------------------------------------------------------------------- building the parts
def build_parts(cfg: DictConfig, folder: Path, timing: dict) -> Any:
    """Seed, then build data, corruption and model once; refuse a model the machine cannot hold."""
    from aelab.run.session import configure_threads, quiet_known_warnings

    started = time.time()
    from aelab.run.imports import import_lightning

    import_lightning()  # without what torchmetrics loads at its import for no run (aelab.run.imports)
    import lightning as L
    import torch  # noqa: F401 — timed here: the libraries' share of the start-up

    timing["imports_s"] = round(time.time() - started, 3)
    from aelab.run.parts import build_components, size_problem

    quiet_known_warnings()
    configure_threads(cfg)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    try:
        parts = build_components(cfg)
    except Exception as exc:  # a component's own check, or memory the model cannot get
        cause = find_aelab_error(exc)
        if cause is not None:
            raise Refused(cause) from None
        if _out_of_memory(exc):  # its weights alone do not fit: say how big it is (counted without memory)
            raise Refused(ConfigError(size_problem(meta_parameter_count(cfg), folder, on_gpu) or str(exc))) from None
        raise
    problem = size_problem(parts.model.num_parameters(), folder, on_gpu)
    if problem:
        raise Refused(ConfigError(problem))
    optimizer_check(cfg, parts.model)
    return parts


def optimizer_check(cfg: DictConfig, model: Any) -> None:
    """Build the model's optimizer and scheduler once, before the run folder exists: an argument they refuse
    (``model.optimizer.lr=-1``: torch's "Invalid learning rate") is one line naming the key, not a traceback after
    the folder was made."""
    try:
        model.configure_optimizers()
    except RuntimeError:  # e.g. a model whose schedule reads self.trainer (not attached yet): training will tell
        return
    except (ValueError, TypeError) as exc:
        import traceback

        raised_in = traceback.extract_tb(exc.__traceback__)[-1].filename
        part = "scheduler" if "lr_scheduler" in raised_in and cfg.model.get("scheduler") else "optimizer"
        given = OmegaConf.to_container(cfg.model.get(part) or {}, resolve=True)
        shown = ", ".join(f"{k}={v}" for k, v in given.items() if not str(k).startswith("_"))
        raise Refused(ConfigError(f"model.{part} ({shown}) cannot be built: {exc}")) from None


def _out_of_memory(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, (RuntimeError, MemoryError)) and "memory" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def meta_parameter_count(cfg: DictConfig) -> int:
    """The parameters of the model ``cfg`` describes, counted on PyTorch's meta device (no memory, no initialisation):
    only for a model that could not be built because its weights do not fit."""
    import torch
    from hydra.utils import instantiate

    dims = list(instantiate(cfg.data, _convert_="all").dims)
    with torch.device("meta"):
        noise = instantiate(cfg.noise, _convert_="all")
        model = instantiate(cfg.model, input_shape=dims, noise=noise, _convert_="all")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resume_from(cfg: DictConfig, run_dir: Path | None, model=None) -> tuple[Path | None, int]:
    """The checkpoint the run continues from (``ckpt_path=``, or the folder's own newest) and its optimizer step.

    Loaded once, weights only unless ``trust_checkpoint`` (a truncated file, or one holding more than weights, is
    named before anything starts) and, given the model, checked for its shapes (a checkpoint of another model size
    is named before anything is written)."""
    from aelab.store.checkpoints import load_checkpoint, newest_resume_checkpoint, resume_checkpoint

    try:
        path = None  # a fresh folder (run_dir None) starts from ckpt_path= only
        ckpt = cfg.get("ckpt_path")
        if ckpt and run_dir is not None and same_start(cfg, run_dir) and str(cfg.resume) != "never":
            ckpt = None  # the same command again: continue from the run's own newest checkpoint (when it has one)
            if newest_resume_checkpoint(run_dir / "checkpoints") is None:
                ckpt = cfg.get("ckpt_path")
        if run_dir is not None or ckpt:
            path = resume_checkpoint(run_dir or Path("."), ckpt, str(cfg.resume))
        if path is None:
            return None, 0
        checkpoint = load_checkpoint(path, mmap=True, trust=bool(cfg.get("trust_checkpoint", False)))
        problem = shape_problem(checkpoint.get("state_dict") or {}, model.state_dict()) if model is not None else None
        if problem:
            raise ConfigError(
                f"checkpoint {path} holds a model of another shape than this config builds ({problem}): "
                "continue it with the config it was trained with, or start a new run (another name=)"
            )
        return path, int(checkpoint.get("global_step", 0))
    except AelabError as exc:
        raise Refused(exc) from None


def shape_problem(saved: dict, wanted: dict) -> str | None:
    """How a checkpoint's weights differ from a model's: the first tensor of another shape, or missing/extra ones."""
    for key, tensor in wanted.items():
        if key in saved and tuple(saved[key].shape) != tuple(tensor.shape):
            return f"{key}: {list(saved[key].shape)} in the checkpoint, {list(tensor.shape)} now"
    missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    if missing or extra:
        return f"{len(missing)} weights missing (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})"
    return None


def prepare(cfg: DictConfig, run_dir: Path, choose=None, checked: bool = False, fresh: bool = False) -> Prepared:
    """Steps 1–4 of the module docstring for the run in ``run_dir``; ``choose()`` creates and locks the folder.

    ``choose`` runs after everything that can refuse the run, so a refused run leaves no folder; it returns
    the folder actually used (a ``fresh`` one may get a ``_2`` suffix: no earlier run of it to read).
    A sweep job's folder exists already (Hydra's launcher made it). ``checked``: the config was checked already.
    """
    from aelab.run.session import plan_threads, process_started_at
    from aelab.store.files import refuse_links
    from aelab.store.locks import in_use, owned_elsewhere

    timing = {"process_start": process_started_at(), "pid": os.getpid(), "prepare_start": time.time()}
    if not checked:
        refuse(config_problems(cfg))
    plan_threads(cfg)  # before anything imports torch (the accelerator's check, a checkpoint's reader): OpenMP's spin
    refuse(folder_name_problems(run_dir))
    refuse(machine_problems(cfg, run_dir.parent))
    if not fresh and owned_elsewhere(run_dir):  # a live run: refused before anything is read or built
        raise Refused(in_use(run_dir))
    if not fresh and run_dir.is_dir():
        try:
            refuse_links(run_dir)
        except AelabError as exc:
            raise Refused(exc) from None
    adopted = {}
    if run_dir.is_dir() and not fresh and not cfg.get("ckpt_path"):
        adopted = adopt_recorded_split(cfg, run_dir / ".hydra" / "config.yaml")
    skip, changes = folder_verdict(cfg, run_dir) if run_dir.is_dir() and not fresh else (None, [])
    if skip is not None:
        return Prepared(run_dir, skip=skip, timing=timing, adopted=adopted)
    try:
        parts = build_parts(cfg, run_dir.parent, timing)  # counts this job among the machine's running jobs
        if not fresh:
            changes = changes + data_changes(cfg, run_dir, parts.datamodule)
        resume, step = resume_from(cfg, None if fresh else run_dir, parts.model)
        if choose is not None:
            run_dir = choose()
    except BaseException:  # refused here: the process (a notebook's, a sweep's) no longer counts as a running job
        from aelab.run.threads import leave

        leave()
        raise
    prepared = Prepared(run_dir, parts, resume, step, timing=timing, changes=changes, adopted=adopted)
    _PREPARED[run_dir.resolve()] = prepared
    return prepared


def take(run_dir: Path) -> Prepared | None:
    """The parts prepared for ``run_dir`` in this process (once)."""
    return _PREPARED.pop(Path(run_dir).resolve(), None)


def prepare_here(cfg: DictConfig, run_dir: Path) -> Prepared:
    """The pre-run step where the job runs: a sweep job (its folder made by the launcher), a DDP rank, a direct call."""
    from aelab.run.folders import own
    from aelab.store.locks import is_extra_rank

    if is_extra_rank():  # rank 0 checked and owns the folder; this rank builds its own copy of the parts
        from aelab.run.session import plan_threads

        plan_threads(cfg)
        adopt_recorded_split(cfg, run_dir / ".hydra" / "config.yaml")  # the split rank 0 trains on
        return Prepared(run_dir, build_parts(cfg, run_dir.parent, {}), *resume_from(cfg, run_dir))
    own(run_dir)
    prepared = prepare(cfg, run_dir)
    take(run_dir)  # used here and now: an entry left behind would hand these parts to a later job of this folder
    return prepared
