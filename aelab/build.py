"""Building a run's parts from its config: the one place that instantiates them.

:func:`build_components` makes the data, corruption and model trio for
``aelab-train``, ``aelab-eval`` / :func:`aelab.runs.load_run` and the Python API
alike; :func:`instantiate_group` the entries of a dict-of-components group
(callbacks, loggers, evaluation tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from aelab.errors import ConfigError


@dataclass
class Components:
    datamodule: Any
    noise: Any
    model: Any


def build_components(cfg: DictConfig) -> Components:
    """Instantiate ``cfg.data``, ``cfg.noise`` and ``cfg.model`` (the model gets the data's input shape and the noise).

    ``_convert_="all"`` hands plain lists and dicts to the constructors (and into checkpoints).
    """
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    noise = instantiate(cfg.noise, _convert_="all")
    model = instantiate(cfg.model, input_shape=list(datamodule.dims), noise=noise, _convert_="all")
    return Components(datamodule, noise, model)


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
