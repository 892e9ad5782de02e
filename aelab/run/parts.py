"""A run's parts from its config: data, corruption and model (built once), callbacks, loggers, metric meanings.

:func:`build_components` makes the data, corruption and model trio for ``aelab-train``,
``aelab-eval`` / :func:`aelab.run.load.load_run` and the Python API alike;
:func:`instantiate_group` the entries of a dict-of-components group (callbacks, loggers,
evaluation tasks); the rest assembles what a training job needs around them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from aelab.errors import ConfigError

if TYPE_CHECKING:
    from aelab.run.job import Job

log = logging.getLogger("aelab.train")


@dataclass
class Components:
    datamodule: Any
    noise: Any
    model: Any


def build_components(cfg: DictConfig, value_range: str | None = None) -> Components:
    """Instantiate ``cfg.data``, ``cfg.noise`` and ``cfg.model`` (the model gets the data's input shape, value range
    and the noise).

    ``_convert_="all"`` hands plain lists and dicts to the constructors (and into checkpoints).
    The top-level options that configure the model (``nonfinite_loss``, ``steps_per_call``, ``compile``) are applied
    here. ``value_range`` overrides the data's own (a run folder's recorded one).
    """
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    noise = instantiate(cfg.noise, _convert_="all")
    value_range = value_range or datamodule.value_range
    # only real-valued data pass it: a model of an extension written before value_range existed still builds for [0, 1]
    extra = {"value_range": value_range} if value_range != "unit" else {}
    model = instantiate(cfg.model, input_shape=list(datamodule.dims), noise=noise, **extra, _convert_="all")
    if cfg.get("nonfinite_loss") is not None:
        model.nonfinite_loss = str(cfg.nonfinite_loss)
    # training batches per Lightning call: the loader's chunks, and the model's messages
    datamodule.steps_per_call = model.steps_per_call = int(cfg.get("steps_per_call") or 1)
    if cfg.get("compile"):
        for net in (model.encoder, model.decoder):  # in place: parameter names (and checkpoints) stay
            net.compile()
    return Components(datamodule, noise, model)


def size_problem(params: int, run_dir: Path, on_gpu: bool) -> str | None:
    """Why a model of ``params`` float32 parameters would not fit the free memory or ``run_dir``'s disk, or None.

    Training holds weights, gradients and Adam's two moments (16 bytes per parameter);
    ``last.ckpt`` keeps weights and optimizer state (12 bytes), the best checkpoint the weights (4).
    """
    import shutil

    gib = 1024**3
    train_bytes, disk_bytes = 16 * params, 16 * params
    problems = []
    if not on_gpu:
        available = _available_memory()
        if available is not None and train_bytes > 0.9 * available:
            problems.append(
                f"training needs about {train_bytes / gib:.1f} GiB of memory (weights, gradients, Adam state), "
                f"and {available / gib:.1f} GiB are available"
            )
    try:
        free = shutil.disk_usage(run_dir if run_dir.exists() else run_dir.parent).free
    except OSError:
        free = None
    if free is not None and disk_bytes > free:
        problems.append(f"its checkpoints need about {_size(disk_bytes)} and {run_dir} has {_size(free)} free")
    if not problems:
        return None
    return (
        f"the model has {params / 1e6:,.1f} M parameters: "
        + "; ".join(problems)
        + ". Choose a smaller model.bottleneck (or hidden sizes), or run it on a bigger machine"
    )


def _size(n: float) -> str:
    """Bytes in the unit that shows them: ``3.4 GiB``, ``37 KiB``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= 0.1 * size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def instantiate_group(group: DictConfig | None, **extra: dict[str, Any]) -> dict[str, Any]:
    """Instantiate every entry of a dict-of-components group, skipping nulls; ``extra[name]`` adds arguments."""
    from hydra.utils import instantiate

    objects = {}
    for name, conf in (group or {}).items():
        if conf is None:
            continue
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ConfigError(f"entry {name!r} of a callbacks/logger/eval group needs a _target_ (got {conf})")
        objects[str(name)] = instantiate(conf, **extra.get(name, {}), _convert_="all")
    return objects


# ----------------------------------------------------------------------------- around the trio, for a training job
def callbacks(job: Job) -> list:
    """The config's callbacks plus those every run needs (history, step seeding, timing; pruning in an Optuna
    search)."""
    from lightning.pytorch.callbacks import ProgressBar

    from aelab.callbacks import MetricsHistory, StepSeeding, Timing

    cfg = job.cfg
    found = list(instantiate_group(cfg.get("callbacks")).values())
    job.history = next((c for c in found if isinstance(c, MetricsHistory)), None) or MetricsHistory()
    job.clock = Timing()
    found += [
        c for c in (job.history, StepSeeding(int(cfg.seed)), job.clock) if not any(type(c) is type(d) for d in found)
    ]
    from aelab.run import threads

    if threads.current is not None and threads.current.adapts:  # threads follow the jobs sharing the machine
        from aelab.callbacks.threads import ThreadShare

        found.append(ThreadShare(threads.current))
    search = cfg.get("search") or {}
    if search.get("trial") is not None:  # a job of an Optuna search: report every epoch, stop when pruned
        from aelab.callbacks.pruning import OptunaPruning, make_pruner

        monitor, mode = str(cfg.model.monitor), str(cfg.model.get("monitor_mode", "min"))
        job.pruning = OptunaPruning(
            str(search.storage), str(search.study), int(search.trial), monitor, make_pruner(search), mode
        )
        found.append(job.pruning)
    job.checkpoint = next((c for c in found if type(c).__name__ == "ModelCheckpoint" and c.monitor), None)
    if not cfg.get("verbose", True):  # quiet: no bar (the log and train.log say how it goes)
        found = [c for c in found if not isinstance(c, ProgressBar)]
    return found


def trainer_options(cfg: DictConfig, callbacks: list) -> dict[str, Any]:
    """What the Trainer gets beyond ``cfg.trainer``: no bar of Lightning's own when the run has none
    (``callbacks.progress_bar=null`` is silent), no model table when quiet (``verbose=false``)."""
    from lightning.pytorch.callbacks import ProgressBar

    options: dict[str, Any] = {}
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        options["enable_progress_bar"] = False
    if not cfg.get("verbose", True):
        options["enable_model_summary"] = False
    return options


def metric_catalog(model, tasks: dict[str, Any]):
    """What every metric of the run means: the model's, its evaluations' and the record's own facts."""
    from aelab.metric_info import MetricCatalog
    from aelab.store.record import RECORD_METRICS

    catalog = MetricCatalog(model.metric_info())
    for task in tasks.values():
        catalog.add(task.metric_info())
    return catalog.add(RECORD_METRICS)


def logger_arguments(job: Job) -> dict[str, dict[str, Any]]:
    """What the loggers learn from the run: its sweep (W&B group, MLflow tag) and, when it continues, its tracked
    runs."""
    from aelab.run.session import sweep_name
    from aelab.store.runs import wandb_run_id

    loggers, extra = job.cfg.get("logger") or {}, {}
    continuing = job.resume_from is not None
    if loggers.get("wandb") is not None:
        # the W&B group: the configured one, the sweep folder's name, or the W&B sweep whose agent started the run
        extra["wandb"] = {"group": loggers.wandb.get("group") or sweep_name() or os.environ.get("WANDB_SWEEP_ID")}
        if continuing and wandb_run_id(job.run_dir):  # the same W&B run continues
            extra["wandb"]["id"] = wandb_run_id(job.run_dir)
    if loggers.get("mlflow") is not None:
        extra["mlflow"] = {"sweep": sweep_name(), "save_dir": str(job.run_dir)}
        if continuing and job.record.mlflow_id:  # the same MLflow run continues
            extra["mlflow"]["run_id"] = job.record.mlflow_id
    return extra


def loggable(job: Job) -> dict[str, Any]:
    """The run's config for the loggers, with the facts dashboards plot against."""
    from aelab.run.session import loggable_config

    return {
        **loggable_config(job.cfg, job.choices),
        "params": job.model.num_parameters(),
        "metric_info": job.info.to_json(),
        "dataset_info": job.datamodule.info(),
    }


def describe(job: Job) -> None:
    """Log what is about to run; warn when the code does not compress and nothing else stops the identity."""
    import torch

    cfg, model = job.cfg, job.model
    continuing = f" (continuing from {job.resume_from.name})" if job.resume_from else ""
    log.info("run folder: %s%s", job.run_dir, continuing)
    log.info("data: %s", job.datamodule.describe())
    name = job.choices.get("model", type(model).__name__)
    threads = torch.get_num_threads()
    log.info(
        "model: %s, bottleneck %s, %s parameters, noise %s, %d CPU thread%s",
        name, cfg.model.get("bottleneck"), f"{model.num_parameters():,}", job.noise.describe(), threads,
        "" if threads == 1 else "s",
    )  # fmt: skip
    size = 1
    for s in job.datamodule.dims:
        size *= int(s)
    bottleneck = cfg.model.get("bottleneck")
    regularised = cfg.model.get("sparse") or cfg.model.get("contractive") or job.noise.name != "none"
    if isinstance(bottleneck, int) and bottleneck >= size and not regularised:
        log.warning(
            "model.bottleneck=%d is not smaller than the input (%d values per image): without a sparsity/contractive "
            "penalty or a corruption the autoencoder can learn the identity",
            bottleneck,
            size,
        )
