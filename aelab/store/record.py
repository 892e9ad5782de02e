"""``metrics.json``: the record of one run, owned by one class, with one typed schema.

:class:`RunRecord` is the only code that reads, merges and writes a run's ``metrics.json``;
:class:`RecordData` is its schema — the keys the job writes, ``aelab-compare``/``aelab-eval``/the
sweep tables read, and the docs list (the docs page is generated from this class). Within one
process the record lives in memory (the training job holds one and adds its evaluations to it);
the file is how a run tells *other* processes what happened (``aelab-eval``, ``aelab-compare``,
a sweep's summary, a continued run looking up its W&B id).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypedDict

from aelab.errors import RunFolderError
from aelab.metric_info import MetricCatalog, MetricInfo
from aelab.store.files import write_json_atomic

METRICS_FILE = "metrics.json"
Status = Literal["running", "completed", "failed", "interrupted", "pruned"]
STATUSES: tuple[str, ...] = Status.__args__  # pruned: stopped early by an Optuna search


class RecordData(TypedDict, total=False):
    """The keys of ``metrics.json`` (every key is optional but ``status``)."""

    status: Status
    """``running`` while a process trains it; ``running`` with no live owner reads as ``interrupted``."""
    error: str | None
    """The user-facing reason of a failure or interruption (``error_type``: its exception class)."""
    error_type: str | None
    run_dir: str
    """Where the run was written (run folders may move: readers use the folder they read)."""
    model: str | None
    """The chosen options of the config groups ``model``, ``data``, ``noise``, ``experiment``."""
    data: str | None
    noise: str | None
    experiment: str | None
    bottleneck: int | None
    """``model.bottleneck``: the code size (a VAE's latent size)."""
    params: int | None
    """Trainable parameters."""
    seed: int | None
    epochs: int
    """Epochs completed (1-based: 3 means the first three)."""
    global_step: int
    """Optimizer steps taken."""
    images_seen: int
    """Training images the optimizer steps saw (steps × batch size, all ranks)."""
    wall_time_s: float
    """This sitting's wall time, start of the process to the record."""
    started_at: str
    finished_at: str | None
    finished_at_unix: float | None
    final: dict[str, Any]
    """The last value of every logged metric, plus the ``eval/*`` numbers."""
    best: dict[str, Any]
    """The best value of every ``val/*`` metric with a direction (see ``metric_info``)."""
    convergence: dict[str, Any] | None
    """Whether the run was still improving at its end, from its monitored validation curve
    (:mod:`aelab.convergence`): ``{metric, higher_is_better, validations, window, rate_pct_per_epoch, rate_se_pct,
    noise_pct, verdict, still_improving, rule, curve}``; records without it are assessed from ``csv/metrics.csv``."""
    stopped_early: dict[str, Any] | None
    """``{"epoch", "reason"}`` when early stopping (``callbacks/early_stopping=plateau``) ended training before
    ``trainer.max_epochs`` (epoch counted from 1); null otherwise."""
    best_epoch: int | None
    """The epoch of the best monitored value (``model.monitor``) as Lightning counts it, from 0 (shown +1: the
    summary, grids and figures count epochs from 1, as ``epochs`` does)."""
    objective: dict[str, Any]
    """``{"metric", "value"}``: what a sweep or search optimises (``optimized_metric``)."""
    checkpoints: dict[str, str | None]
    """``{"best", "last"}`` paths."""
    dataset: str | None
    """A one-line description of the data (sizes, shape, source)."""
    dataset_info: dict[str, Any] | None
    """The data module's description: source, split sizes, shape, cache, skipped files."""
    split_seed_adopted: int | None
    """A run folder from before ``data.split_seed`` continued under another ``seed``: the split seed it keeps (the
    seed it was recorded with), so that every later sitting keeps it too."""
    resumed_from: str | None
    """The checkpoint this sitting continued from."""
    config_fingerprint: str
    """The hash of the config that made the checkpoints (:mod:`aelab.store.fingerprint`)."""
    config_changes: list[dict[str, Any]]
    """Changes accepted with ``on_config_change=continue``: ``{"at_step", "at", "key", "before", "after"}``."""
    wandb: dict[str, Any] | None
    """``{"id"}`` of the run's W&B run."""
    mlflow: dict[str, Any] | None
    """``{"run_id", "tracking_uri", "experiment"}`` of the run's MLflow run."""
    world_size: int | None
    overrides: list[str]
    """The command-line overrides of the run (``aelab-train`` + these reproduces it)."""
    search_path: list[str]
    """The Hydra search path the run was composed with (extensions' config packages)."""
    extension_packages: dict[str, str]
    """The run's own packages (not installed, not aelab's) and the folder each was imported from."""
    metric_info: dict[str, Any]
    """key → ``{label, higher_is_better, summary, column}``, declared by the producers (:mod:`aelab.metric_info`)."""
    eval: dict[str, Any]
    """``{"metrics", "details", "files", "checkpoint", "evaluated_at"}`` of the evaluations."""
    timing: dict[str, Any]
    """Where the wall time went: ``imports_s``, ``startup_s``, ``training_s``, ``after_fit_s``, throughput, and
    ``threads``: the CPU thread counts the job ran with, in order."""
    kl_per_dim: list[float]
    """Model facts (``summary_extras``): a VAE's mean KL per latent dimension, a VQ-VAE's ``codebook``, ..."""
    codebook: dict[str, Any]


#: the facts the record keeps that tables show after the metrics
RECORD_METRICS = (
    MetricInfo("params", "parameters", None, None, True),
    MetricInfo("wall_time_s", "wall time (s)", None, None, True),
)


def now_iso() -> str:
    """The current time, ISO 8601 with timezone."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


class RunRecord:
    """The ``metrics.json`` of one run folder (see the module docstring for its keys)."""

    def __init__(self, run_dir: str | Path, data: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.data: RecordData = RecordData(**(data or {}))

    # ------------------------------------------------------------ reading
    @property
    def path(self) -> Path:
        return self.run_dir / METRICS_FILE

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord | None:
        """The run's record, or None when it has none or it cannot be read."""
        record, _ = cls.read_with_problem(run_dir)
        return record

    @classmethod
    def read_with_problem(cls, run_dir: str | Path) -> tuple[RunRecord | None, str | None]:
        """``(record, None)``, or ``(None, why not)``: missing, unreadable or not JSON."""
        path = Path(run_dir) / METRICS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None, f"no {METRICS_FILE}"
        except OSError as exc:
            return None, f"{METRICS_FILE} cannot be read ({exc.strerror or exc})"
        except ValueError:
            return None, f"{METRICS_FILE} is not valid JSON (half-written by another tool?)"
        if not isinstance(data, dict):
            return None, f"{METRICS_FILE} does not hold a JSON object"
        return cls(run_dir, data), None

    @classmethod
    def require(cls, run_dir: str | Path) -> RunRecord:
        """The run's record; a RunFolderError naming the folder when it has none."""
        record, problem = cls.read_with_problem(run_dir)
        if record is None:
            raise RunFolderError(f"{run_dir}: {problem}: it is not a finished aelab run")
        return record

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    def live_status(self) -> str | None:
        """The status, with ``running`` read as ``interrupted`` when no live process owns the run folder any more."""
        from aelab.store.locks import owner_alive

        if self.status == "running" and not owner_alive(self.run_dir):
            return "interrupted"
        return self.status

    @property
    def final(self) -> dict[str, Any]:
        return self.data.get("final") or {}

    @property
    def best(self) -> dict[str, Any]:
        return self.data.get("best") or {}

    @property
    def objective(self) -> Any:
        return (self.data.get("objective") or {}).get("value")

    def convergence(self) -> dict[str, Any] | None:
        """The recorded convergence verdict; for a record without one, the same rule applied to the run folder's
        CSV log (the monitored metric from its ``.hydra/config.yaml``); None when neither has a curve."""
        stored = self.data.get("convergence")
        if stored or "convergence" in self.data:
            return stored
        from aelab.convergence import assess_run_folder

        metric, mode = self._monitor()
        higher = self.metric_info.higher_is_better(metric)
        return assess_run_folder(self.run_dir, metric, mode == "max" if higher is None else higher)

    def _monitor(self) -> tuple[str, str]:
        """The run's monitored validation metric and its mode, from its ``.hydra/config.yaml``."""
        metric, mode = "val/recon_loss", "min"
        try:
            import yaml

            model = (yaml.safe_load((self.run_dir / ".hydra" / "config.yaml").read_text()) or {}).get("model") or {}
            metric, mode = str(model.get("monitor") or metric), str(model.get("monitor_mode") or mode)
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            pass
        return metric, mode

    def epochs_done(self) -> int:
        """The epochs the run finished: the record's count, or — for a run killed before it could record its end —
        the epochs its CSV log validated (a run SIGKILLed after one epoch had recorded 0)."""
        recorded = int(self.data.get("epochs") or 0)
        if self.live_status() == "completed":
            return recorded
        from aelab.convergence import curve_from_csv

        epochs, _ = curve_from_csv(self.run_dir / "csv" / "metrics.csv", self._monitor()[0])
        return max(recorded, max(epochs, default=0))

    @property
    def wandb_id(self) -> str | None:
        value = (self.data.get("wandb") or {}).get("id")
        return str(value) if value else None

    @property
    def mlflow_id(self) -> str | None:
        value = (self.data.get("mlflow") or {}).get("run_id")
        return str(value) if value else None

    @property
    def metric_info(self) -> MetricCatalog:
        return MetricCatalog.from_json(self.data.get("metric_info")).add(RECORD_METRICS)

    def flat_metrics(self) -> dict[str, Any]:
        """Every number a table can show: ``final`` values, ``best/<key>`` and the record's facts."""
        out: dict[str, Any] = {
            key: self.data.get(key) for key in ("bottleneck", "params", "wall_time_s", "epochs", "seed")
        }
        out.update(self.final)
        out.update({f"best/{k}": v for k, v in self.best.items()})
        return out

    # ------------------------------------------------------------ writing
    def update(self, **values: Any) -> RunRecord:
        self.data.update(values)
        return self

    def add_metric_info(self, infos) -> RunRecord:
        """Declare metrics (infos already known keep their first declaration)."""
        catalog = MetricCatalog.from_json(self.data.get("metric_info")).add(infos)
        self.data["metric_info"] = catalog.to_json()
        return self

    def add_evaluation(
        self, metrics: dict[str, Any], details: dict[str, Any], files: dict[str, str], checkpoint: str | None, infos=()
    ) -> RunRecord:
        """Merge evaluation results: numbers into ``final`` and ``eval.metrics``, the rest under ``eval``."""
        section = self.data.setdefault("eval", {})
        section.setdefault("metrics", {}).update(metrics)
        section.setdefault("details", {}).update(details)
        section.setdefault("files", {}).update(files)
        section["checkpoint"] = checkpoint
        section["evaluated_at"] = now_iso()
        self.data.setdefault("final", {}).update(
            {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
        )
        return self.add_metric_info(infos)

    def save(self) -> RunRecord:
        """Write ``metrics.json`` atomically (a temporary file, then a rename)."""
        write_json_atomic(self.path, self.data)
        return self
