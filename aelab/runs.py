"""Run folders: reading and writing ``metrics.json``, finding checkpoints, reloading runs.

A run folder holds ``.hydra/config.yaml`` (the composed config),
``metrics.json``, ``checkpoints/``, ``samples/``, ``csv/`` and, with W&B,
``wandb/``. Everything the evaluation and comparison entry points need is
read from there.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aelab.errors import RunFolderError

METRICS_FILE = "metrics.json"


def now_iso() -> str:
    """The current time, ISO 8601 with timezone."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tensors and numpy scalars become floats."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write ``data`` as JSON so that a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(data), fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary name next to ``path``; on success it is renamed to ``path`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # same suffix: savefig picks the format
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_metrics(run_dir: str | Path) -> dict | None:
    """The run's ``metrics.json``, or ``None`` when it has none (or it is unreadable)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


_WANDB_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)(?:-\d+)?$")


def wandb_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder was tracked under: ``metrics.json``'s, else its newest ``wandb/*run-*`` folder's.

    W&B names a run's folder ``[offline-]run-<date>_<time>-<id>``, adding ``-1``, ``-2`` ...
    when a resumed run starts in the same second.
    """
    wandb_id = ((read_metrics(run_dir) or {}).get("wandb") or {}).get("id")
    if wandb_id:
        return str(wandb_id)
    ids = [m["id"] for p in sorted((Path(run_dir) / "wandb").glob("*run-*")) if p.is_dir() and (m := _WANDB_FOLDER.match(p.name))]
    return ids[-1] if ids else None


def update_metrics(run_dir: str | Path, section: str, values: dict[str, Any]) -> dict:
    """Merge ``values`` into ``metrics.json[section]`` (and into ``final``) and write it back."""
    data = read_metrics(run_dir)
    if data is None:
        raise RunFolderError(f"{run_dir} has no {METRICS_FILE}: it is not a finished aelab run")
    data.setdefault(section, {}).update(values)
    if section != "final":
        data.setdefault("final", {}).update({k: v for k, v in values.items() if isinstance(v, (int, float)) or v is None})
    write_json_atomic(Path(run_dir) / METRICS_FILE, data)
    return data


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
        metrics = read_metrics(run_dir) or {}
        best = (metrics.get("checkpoints") or {}).get("best")
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


def load_run_config(run_dir: str | Path):
    """The run's composed config (``.hydra/config.yaml``) with its folder filled in."""
    from omegaconf import OmegaConf, open_dict

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunFolderError(f"{run_dir} is not an aelab run folder (no .hydra/config.yaml)")
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir.resolve())  # was ${hydra:runtime.output_dir}
    return cfg


def run_choices(run_dir: str | Path) -> dict[str, str]:
    """The config-group options a run was composed from (``model: conv``, ...)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    choices = OmegaConf.to_container(OmegaConf.load(path).hydra.runtime.choices)
    return {k: v for k, v in choices.items() if v is not None and not k.startswith("hydra")}


class LoadedRun:
    """A trained run brought back: its config, model (eval mode), DataModule and metrics."""

    def __init__(self, run_dir: Path, cfg, model, datamodule, checkpoint: Path):
        self.run_dir = run_dir
        self.cfg = cfg
        self.model = model
        self.datamodule = datamodule
        self.checkpoint = checkpoint

    @property
    def metrics(self) -> dict:
        return read_metrics(self.run_dir) or {}


def load_run(run_dir: str | Path, which: str = "best", device: str = "cpu", setup_data: bool = True) -> LoadedRun:
    """Rebuild a run's model from its config and load its ``best`` or ``last`` checkpoint.

    Raises :class:`RunFolderError` for a folder without config or checkpoint.
    """
    from hydra.utils import instantiate

    from aelab.checkpoints import load_checkpoint

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    ckpt = checkpoint_path(run_dir, which)
    datamodule = instantiate(cfg.data, _convert_="all")
    noise = instantiate(cfg.noise, _convert_="all")
    model = instantiate(cfg.model, input_shape=list(datamodule.dims), noise=noise, _convert_="all")
    state = load_checkpoint(ckpt, map_location=device)
    model.load_state_dict(state["state_dict"])
    model.to(device).eval()
    if setup_data:
        datamodule.setup("test")
    return LoadedRun(run_dir, cfg, model, datamodule, ckpt)
