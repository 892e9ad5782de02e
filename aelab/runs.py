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
from aelab.record import RunRecord

_WANDB_FOLDER = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)(?:-\d+)?$")


def wandb_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder was tracked under: ``metrics.json``'s, else its newest ``wandb/*run-*`` folder's.

    W&B names a run's folder ``[offline-]run-<date>_<time>-<id>``, adding ``-1``, ``-2`` ...
    when a resumed run starts in the same second.
    """
    record = RunRecord.read(run_dir)
    if record is not None and record.wandb_id:
        return record.wandb_id
    ids = [m["id"] for p in sorted((Path(run_dir) / "wandb").glob("*run-*")) if p.is_dir() and (m := _WANDB_FOLDER.match(p.name))]
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
    """A trained run brought back: its config, model (eval mode, on its device), data and record.

    From Python (a notebook)::

        run = aelab.load_run("outputs/runs/<run>")
        codes = run.encode(images)            # NumPy or torch, uint8 or float, [N,H,W] / [N,H,W,C] / [N,C,H,W] or [N,D]
        recon = run.reconstruct(images)
        scores = run.score(images)            # {"mse": ..., "elbo": ... (VAEs)}, per input
        dm = run.datamodule()                 # the run's DataModule, set up
    """

    def __init__(self, run_dir: Path, cfg, model, data, checkpoint: Path | None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.model = model
        self.data = data
        self.checkpoint = checkpoint

    @property
    def config(self):
        return self.cfg

    @property
    def record(self) -> RunRecord | None:
        return RunRecord.read(self.run_dir)

    @property
    def metrics(self) -> dict:
        record = self.record
        return record.data if record is not None else {}

    def datamodule(self):
        """The run's DataModule, set up (its splits as in training)."""
        self.data.setup()
        return self.data

    @property
    def input_spec(self):
        """What the model takes and how raw inputs become it (:class:`aelab.inputs.InputSpec`)."""
        from aelab.inputs import InputSpec

        return InputSpec.of_run(self.cfg, self.data.dims, self.metrics.get("dataset_info"))

    def _map(self, x, fn, batch_size: int = 1024) -> dict:
        import torch

        from aelab.batches import map_batches

        prepared = self.input_spec.prepare(x)
        batches = ({"image": part.to(self.model.device)} for part in prepared.split(batch_size))
        with torch.no_grad():
            return {k: v.numpy() for k, v in map_batches(batches, fn).items()}

    def encode(self, x, batch_size: int = 1024):
        """Codes of inputs ``x`` (the mean codes for VAEs), as a NumPy array ``[N, bottleneck]``."""
        return self._map(x, lambda b: {"z": self.model.encode(b["image"])}, batch_size)["z"]

    def reconstruct(self, x, batch_size: int = 1024):
        """Reconstructions of inputs ``x`` in [0, 1], as a NumPy array in the model's input shape."""
        return self._map(x, lambda b: {"r": self.model.reconstruct(b["image"]).clamp(0, 1)}, batch_size)["r"]

    def score(self, x, score: str = "mean", topk: float = 0.01, batch_size: int = 1024) -> dict:
        """Per-input anomaly scores, defined as ``aelab-eval``'s anomaly task defines them: ``mse`` (the error map's
        mean, or with ``score="topk"`` the mean of its ``topk`` largest share) and, for VAEs, ``elbo``."""
        from aelab.evaluation.anomaly import image_score

        def scores(b):
            return {**self.model.anomaly_scores(b["image"]), "mse": image_score(self.model.error_map(b["image"]), score, topk)}

        return self._map(x, scores, batch_size)

    def fresh_model(self):
        """The run's model at initialisation: the same config and seed, no training."""
        import lightning as L

        from aelab.build import build_components

        L.seed_everything(int(self.cfg.get("seed", 0)), verbose=False)
        return build_components(self.cfg).model.to(self.model.device).eval()


def load_run(run_dir: str | Path, which: str = "best", device: str = "cpu", setup_data: bool = True) -> LoadedRun:
    """Rebuild a run's model from its config and load its ``best`` or ``last`` checkpoint onto ``device``
    (``auto``: a GPU when there is one).

    Raises :class:`RunFolderError` for a folder without config or checkpoint.
    """
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from aelab.build import build_components
    from aelab.checkpoints import load_checkpoint

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    ckpt = checkpoint_path(run_dir, which)
    parts = build_components(cfg)
    state = load_checkpoint(ckpt, map_location=device)
    parts.model.load_state_dict(state["state_dict"])
    parts.model.to(device).eval()
    if setup_data:
        parts.datamodule.setup("test")
    return LoadedRun(run_dir, cfg, parts.model, parts.datamodule, ckpt)
