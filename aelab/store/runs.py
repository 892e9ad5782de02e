"""Run folders: finding them and their checkpoints, their configs and W&B ids, and reloading trained runs.

A run folder holds ``.hydra/config.yaml`` (the composed config),
``metrics.json``, ``checkpoints/``, ``samples/``, ``csv/`` and, with W&B,
``wandb/``. Everything the evaluation and comparison entry points need is
read from there.
"""

from __future__ import annotations

import re
from pathlib import Path

from aelab.errors import RunFolderError
from aelab.store.record import RunRecord

_WANDB_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)(?:-\d+)?$")


def wandb_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder was tracked under: ``metrics.json``'s, else its newest ``wandb/*run-*`` folder's.

    W&B names a run's folder ``[offline-]run-<date>_<time>-<id>``, adding ``-1``, ``-2`` ...
    when a resumed run starts in the same second.
    """
    record = RunRecord.read(run_dir)
    if record is not None and record.wandb_id:
        return record.wandb_id
    ids = [
        m["id"]
        for p in sorted((Path(run_dir) / "wandb").glob("*run-*"))
        if p.is_dir() and (m := _WANDB_FOLDER.match(p.name))
    ]
    return ids[-1] if ids else None


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like an aelab run folder (has a composed Hydra config)."""
    return (Path(path) / ".hydra" / "config.yaml").is_file()


def find_run_dirs(path: str | Path) -> list[Path]:
    """``path`` itself if it is a run folder, else every run folder below it (sorted)."""
    path = Path(path)
    if is_run_dir(path):
        return [path]
    return sorted(p.parent.parent for p in path.glob("**/.hydra/config.yaml"))


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """The run's ``best`` (by validation loss) or ``last`` checkpoint."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if which == "best":
        record = RunRecord.read(run_dir)
        best = ((record.get("checkpoints") if record else None) or {}).get("best")
        if best and (ckpt_dir / Path(best).name).is_file():  # by name: run folders may be moved or copied
            return ckpt_dir / Path(best).name
        candidates = sorted(ckpt_dir.glob("best*.ckpt"))
        if candidates:
            return candidates[-1]
    last = ckpt_dir / "last.ckpt"
    if last.is_file():
        return last
    raise RunFolderError(
        f"{run_dir} has no checkpoint ({ckpt_dir} holds no best*.ckpt or last.ckpt); "
        "train it first, or point at a run folder that finished at least one epoch"
    )


def read_yaml(path: str | Path, mapping: bool = True):
    """A YAML file of a run folder as a DictConfig (``mapping=False``: a ListConfig); one that cannot be read, is
    not YAML or not of that kind is a RunFolderError naming it."""
    import yaml
    from omegaconf import DictConfig, ListConfig, OmegaConf

    path = Path(path)
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path} does not exist") from None
    except OSError as exc:
        raise RunFolderError(f"{path} cannot be read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunFolderError(f"{path} is not valid YAML ({why}): the run folder is damaged") from None
    if not isinstance(cfg, DictConfig if mapping else ListConfig):
        raise RunFolderError(
            f"{path} does not hold a YAML {'mapping' if mapping else 'list'}: the run folder is damaged"
        )
    return cfg


def read_run_config(run_dir: str | Path):
    """The run's ``.hydra/config.yaml`` as written (nothing resolved or filled in); a missing, unreadable or
    garbage file is a RunFolderError naming it."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunFolderError(f"{run_dir} is not an aelab run folder (no .hydra/config.yaml)")
    return read_yaml(run_dir / ".hydra" / "config.yaml")


def load_run_config(run_dir: str | Path):
    """The run's composed config (``.hydra/config.yaml``) with its folder filled in, ready to rebuild the run: one
    without the ``data`` and ``model`` sections is a RunFolderError naming the file (see :func:`read_run_config`)."""
    from omegaconf import DictConfig, open_dict

    cfg = read_run_config(run_dir)
    missing = [part for part in ("data", "model") if not isinstance(cfg.get(part), DictConfig)]
    if missing:
        raise RunFolderError(
            f"{Path(run_dir) / '.hydra' / 'config.yaml'} is not an aelab run config (it has no "
            f"{' or '.join(missing)} section): the run folder is damaged"
        )
    with open_dict(cfg):
        cfg.setdefault("paths", {})
        cfg.paths.run_dir = str(Path(run_dir).resolve())  # was ${hydra:runtime.output_dir}
    return cfg


def run_search_path(run_dir: str | Path) -> list[str]:
    """The Hydra search path a run was composed with (``hydra.searchpath`` of its ``.hydra/hydra.yaml``, e.g.
    ``["pkg://mylab.conf"]``); empty when it recorded none. Garbage in the file is a RunFolderError naming it."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return []
    entries = OmegaConf.select(read_yaml(path), "hydra.searchpath", default=None)
    if entries is None:
        return []
    entries = OmegaConf.to_container(entries, resolve=False) if OmegaConf.is_config(entries) else entries
    if not isinstance(entries, list):
        raise RunFolderError(f"{path}: hydra.searchpath is not a list: the run folder is damaged")
    return [str(e) for e in entries]


def run_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides a run was composed with (``.hydra/overrides.yaml``); empty when it has none."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(item) for item in OmegaConf.to_container(read_yaml(path, mapping=False), resolve=False)]


def run_choices(run_dir: str | Path) -> dict[str, str]:
    """The config-group options a run was composed from (``model: conv``, ...)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    choices = OmegaConf.select(read_yaml(path), "hydra.runtime.choices", default=None)
    if not OmegaConf.is_dict(choices):
        return {}
    choices = OmegaConf.to_container(choices, resolve=False)
    return {k: v for k, v in choices.items() if v is not None and not k.startswith("hydra")}


def natural_key(text: str) -> tuple:
    """Sort key that orders numbers inside names by value: ``model.bottleneck=2`` before ``model.bottleneck=16``."""
    import re

    return tuple(
        (0, float(part), "") if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", part) else (1, 0.0, part)
        for part in re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", str(text))
        if part
    )
