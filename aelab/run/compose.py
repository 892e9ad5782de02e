"""Composing aelab's configs as its entry points do: with the same config tree and the same search path.

Used where a config is composed again outside Hydra's own start of a command: every swept value
of a sweep (checked before the first job), a bad override explained with aelab's words, and
a run's evaluation tasks composed with the search path the run was trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from omegaconf import DictConfig, OmegaConf


def search_path_of(cfg: DictConfig | None) -> list[str]:
    """The ``hydra.searchpath`` a composed config (with its ``hydra`` node) was made with."""
    if cfg is None:
        return []
    found = OmegaConf.select(cfg, "hydra.searchpath", default=None)
    return [str(p) for p in found] if found else []


def quote_override(value: str) -> str:
    """Quote a value for a Hydra override (commas, brackets, colons and ``=`` stay literal)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def searchpath_override(search_path: Iterable[str]) -> list[str]:
    """``hydra.searchpath=[...]`` for ``search_path`` (nothing when it is empty)."""
    paths = [str(p) for p in search_path]
    if not paths:
        return []
    return ["hydra.searchpath=[" + ",".join(quote_override(p) for p in paths) + "]"]


@contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra's global state for ``compose``: the running command's (which knows ``--config-dir``), else aelab's tree."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from aelab import config_dir

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield


def compose(
    config_name: str, overrides: Iterable[str], search_path: Iterable[str] = (), hydra: bool = False
) -> DictConfig:
    """``config_name`` (``config``, ``evaluate``, ``predict``, ``export``) composed with ``overrides`` and
    ``search_path``."""
    from hydra import compose as hydra_compose

    with hydra_context():
        return hydra_compose(
            config_name=config_name,
            overrides=[*searchpath_override(search_path), *overrides],
            return_hydra_config=hydra,
        )


def compose_like(cfg: DictConfig, overrides: Iterable[str], config_name: str = "config") -> DictConfig:
    """``config_name`` composed with ``overrides`` and the search path ``cfg`` was composed with."""
    return compose(config_name, overrides, search_path_of(cfg))
