"""Building a run's parts from its config: the one place that instantiates them.

:func:`build_components` makes the data, corruption and model trio for
``aelab-train``, ``aelab-eval`` / :func:`aelab.store.runs.load_run` and the Python API
alike; :func:`instantiate_group` the entries of a dict-of-components group
(callbacks, loggers, evaluation tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aelab.errors import ConfigError


@dataclass
class Components:
    datamodule: Any
    noise: Any
    model: Any


def build_components(cfg: DictConfig, before_model=None) -> Components:
    """Instantiate ``cfg.data``, ``cfg.noise`` and ``cfg.model`` (the model gets the data's input shape and the noise).

    ``_convert_="all"`` hands plain lists and dicts to the constructors (and into checkpoints).
    """
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    if before_model is not None:  # e.g. a size check that must come before the model's memory is allocated
        before_model(datamodule)
    noise = instantiate(cfg.noise, _convert_="all")
    model = instantiate(cfg.model, input_shape=list(datamodule.dims), noise=noise, _convert_="all")
    return Components(datamodule, noise, model)


def parameter_count(cfg: DictConfig, input_shape: list[int]) -> int:
    """The model's number of parameters, built on PyTorch's meta device (no memory, no initialisation)."""
    import torch
    from hydra.utils import instantiate

    noise = instantiate(cfg.noise, _convert_="all")
    with torch.device("meta"):
        model = instantiate(cfg.model, input_shape=list(input_shape), noise=noise, _convert_="all")
    return sum(p.numel() for p in model.parameters())


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
        problems.append(
            f"its checkpoints need about {disk_bytes / gib:.1f} GiB and {run_dir} has {free / gib:.1f} GiB free"
        )
    if not problems:
        return None
    return (
        f"the model has {params / 1e6:,.1f} M parameters: "
        + "; ".join(problems)
        + ". Choose a smaller model.bottleneck (or hidden sizes), or run it on a bigger machine"
    )


#: library imports done before the training job's own (the size check before the run folder imports torch)
EARLY_IMPORT_SECONDS: dict[str, float] = {}


def model_size_problem(cfg: DictConfig, folder: Path) -> str | None:
    """:func:`size_problem` for the model ``cfg`` describes (its data's input shape, counted on the meta device)."""
    import sys
    import time

    started, first = time.time(), "lightning" not in sys.modules
    import lightning  # noqa: F401 — the DataModule's base class; imported here, timed as the libraries' share
    import torch
    from hydra.utils import instantiate

    if first:  # the run's start-up accounting counts library imports wherever they happen
        EARLY_IMPORT_SECONDS["torch + lightning"] = time.time() - started

    dims = list(instantiate(cfg.data, _convert_="all").dims)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return size_problem(parameter_count(cfg, dims), folder, on_gpu)


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
