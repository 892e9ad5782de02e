"""A trained run brought back from its folder: its config, model (with its checkpoint's weights) and data.

Used by ``aelab-eval``, ``aelab-predict``, ``aelab-export``, ``aelab-compare``'s grids and :func:`aelab.load_run`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from aelab.errors import ConfigError
from aelab.store.record import RunRecord
from aelab.store.runs import checkpoint_path, load_run_config, run_search_path


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but no GPU is visible")
    return name


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
        #: the packages the user trusts explicitly for this run (``trust_packages``): its tasks are checked with them
        self.trusted: list[str] = []

    @property
    def config(self):
        return self.cfg

    @property
    def record(self) -> RunRecord | None:
        return RunRecord.read(self.run_dir)

    @property
    def search_path(self) -> list[str]:
        """The Hydra search path the run was composed with (an extension's config packages), checked as a run's
        package folders are (:func:`aelab.run.extensions.usable_search_path`: a recorded config folder is used only
        when the user names it)."""
        from aelab.run.extensions import usable_search_path

        record = self.record
        recorded = (record.get("search_path") if record else None) or []
        if not isinstance(recorded, list):
            raise ConfigError(f"{self.run_dir / 'metrics.json'}: search_path is not a list: the run folder is damaged")
        return usable_search_path([str(p) for p in recorded], self.run_dir)

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
        """What the model takes and how raw inputs become it (:class:`aelab.data.inputs.InputSpec`)."""
        from aelab.data.inputs import InputSpec

        return InputSpec.of_run(self.cfg, self.data.dims, self.metrics.get("dataset_info"))

    def _map(self, x, fn, batch_size: int = 1024) -> dict:
        import torch

        from aelab.data.batches import map_batches

        prepared = self.input_spec.prepare(x)
        batches = ({"image": part.to(self.model.device)} for part in prepared.split(batch_size))
        with torch.no_grad():
            return {k: v.numpy() for k, v in map_batches(batches, fn).items()}

    def encode(self, x, batch_size: int = 1024):
        """Codes of inputs ``x`` (the mean codes for VAEs), as a NumPy array ``[N, bottleneck]``."""
        return self._map(x, lambda b: {"z": self.model.encode(b["image"])}, batch_size)["z"]

    def reconstruct(self, x, batch_size: int = 1024):
        """Reconstructions of inputs ``x`` as a NumPy array in the model's input shape: in [0, 1], or as they come for
        real-valued data (the run's ``value_range``)."""
        return self._map(x, lambda b: {"r": self.model.in_range(self.model.reconstruct(b["image"]))}, batch_size)["r"]

    def score(self, x, score: str = "mean", topk: float = 0.01, batch_size: int = 1024) -> dict:
        """Per-input anomaly scores, defined as ``aelab-eval``'s anomaly task defines them: ``mse`` (the error map's
        mean, or with ``score="topk"`` the mean of its ``topk`` largest share) and, for VAEs, ``elbo``."""
        from aelab.evaluation.anomaly import image_score

        def scores(b):
            return {
                **self.model.anomaly_scores(b["image"]),
                "mse": image_score(self.model.error_map(b["image"]), score, topk),
            }

        return self._map(x, scores, batch_size)

    def fresh_model(self):
        """The run's model at initialisation: the same config and seed, no training."""
        import lightning as L

        from aelab.run.parts import build_components

        L.seed_everything(int(self.cfg.get("seed", 0)), verbose=False)
        return build_components(self.cfg, self.model.value_range).model.to(self.model.device).eval()


def check_run_config(cfg, run_dir: str | Path, trust_packages: Iterable[str] = ()) -> None:
    """Refuse a run folder's config whose parts would instantiate anything outside the allowlist
    (:mod:`aelab.config.trust`: aelab's components, torch optimizers and schedulers, the run's search-path
    packages' components, and ``trust_packages``). The run's ``hydra.yaml`` is read only when a target needs it."""
    from aelab.config.trust import check_config_targets, search_path_packages, trusted_packages
    from aelab.errors import TrustError

    check = {"trusted": trusted_packages(trust_packages), "where": str(Path(run_dir) / ".hydra" / "config.yaml")}
    try:
        check_config_targets(cfg, **check)
    except TrustError:
        search_packages = search_path_packages(run_search_path(run_dir))
        if not search_packages:
            raise
        check_config_targets(cfg, search_packages=search_packages, **check)


def recorded_range(run_dir: Path) -> str | None:
    """The value range a run's record names; ``unit`` for a record written before runs recorded it (their models
    clamped to [0, 1]); None without a record (the data's own declaration then)."""
    record = RunRecord.read(run_dir)
    info = record.get("dataset_info") if record is not None else None
    if not info:
        return None
    return str(info.get("value_range", "unit"))


def load_run(
    run_dir: str | Path,
    which: str = "best",
    device: str = "cpu",
    setup_data: bool = True,
    trust_checkpoint: bool = False,
    trust_packages: Iterable[str] = (),
) -> LoadedRun:
    """Rebuild a run's model from its config and load its ``best`` or ``last`` checkpoint onto ``device``
    (``auto``: a GPU when there is one).

    The folder is data, not code (``docs/trust.md``): its config may only name allowed ``_target_``s
    (:func:`check_run_config`; ``trust_packages`` adds packages), its checkpoint is read weights only unless
    ``trust_checkpoint`` (full pickle: it runs any code the file holds). Raises :class:`RunFolderError` for a
    folder without config or checkpoint, :class:`aelab.errors.TrustError` for a refused config or checkpoint.
    """
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from aelab.config.trust import trusted_packages
    from aelab.run.extensions import run_context
    from aelab.run.parts import build_components
    from aelab.store.checkpoints import load_checkpoint

    run_dir = Path(run_dir)
    run_context(run_dir, trusted_packages(trust_packages))  # the run's own packages, when the user names them
    cfg = load_run_config(run_dir)
    check_run_config(cfg, run_dir, trust_packages)
    ckpt = checkpoint_path(run_dir, which)
    state = load_checkpoint(ckpt, map_location=device, trust=trust_checkpoint)
    parts = build_components(cfg, recorded_range(run_dir))
    parts.model.load_state_dict(state["state_dict"])
    parts.model.to(device).eval()
    if setup_data:
        parts.datamodule.setup("test")
    loaded = LoadedRun(run_dir, cfg, parts.model, parts.datamodule, ckpt)
    loaded.trusted = trusted_packages(trust_packages)
    return loaded
