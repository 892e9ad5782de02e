"""The top-level options of ``aelab-train`` (``conf/config.yaml``), as a typed dataclass.

The early config check (:mod:`aelab.config.checks`) reads this class from source
for the top-level keys, as it reads the components' signatures for the groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aelab.config.constraints import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability


@dataclass
class SweepOptions:
    name: str | None = None  # sweep folder name under outputs/sweeps (default: a timestamp)
    resume: bool = False  # reuse the latest sweep folder with the same overrides


@dataclass
class SearchOptions:
    pruner: Literal["none", "median"] = (
        "none"  # median: stop trials worse than the median of earlier ones at that epoch
    )
    warmup_epochs: NonNegativeInt = 1
    startup_trials: NonNegativeInt = 2
    storage: str | None = None  # set by aelab's Optuna search for its jobs
    study: str | None = None
    trial: NonNegativeInt | None = None


@dataclass
class PathsOptions:
    root_dir: str = "."
    data_dir: str = "data"
    output_dir: str = "outputs"
    run_dir: str | None = None
    min_free_mb: NonNegativeFloat = 100


@dataclass
class TrainOptions:
    """The top-level keys of ``conf/config.yaml`` (the groups are components, checked by their own signatures)."""

    seed: int = 0
    name: str | None = None
    resume: str = "auto"
    on_config_change: Literal["refuse", "continue"] = "refuse"
    ckpt_path: str | None = None
    trust_checkpoint: bool = False  # load checkpoints with full pickle (runs the code they hold)
    nonfinite_loss: Literal["stop", "skip"] = "stop"
    steps_per_call: PositiveInt = 8
    test: bool = True
    test_ckpt: Literal["best", "last"] = "best"
    optimized_metric: str = "val/recon_loss"
    threads: PositiveInt | None = None
    compile: bool = False
    tags: list[str] = field(default_factory=list)
    verbose: bool = True
    sweep: SweepOptions = field(default_factory=SweepOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    paths: PathsOptions = field(default_factory=PathsOptions)
    data: Any = None
    model: Any = None
    noise: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    eval: Any = None


@dataclass
class EvalOptions:
    """The options of ``aelab-eval`` (``conf/evaluate.yaml``); the tasks are the ``eval`` group's components."""

    run: str
    checkpoint: Literal["best", "last"] = "best"
    device: str = "auto"
    auto_tasks: Any = None
    eval: Any = None
    trust_checkpoint: bool = False  # load the checkpoint with full pickle (runs the code it holds; docs/trust.md)
    trust_packages: list[str] = field(default_factory=list)  # packages the run's config may name besides aelab's


@dataclass
class PredictOptions:
    """The options of ``aelab-predict`` (``conf/predict.yaml``)."""

    run: str
    input: str
    outputs: list[Literal["codes", "recon", "score", "map"]] = field(default_factory=list)
    out: str | None = None
    split: Literal["train", "val", "test"] = "test"
    denoise: bool = False
    score: Literal["mean", "topk"] = "mean"
    topk: Probability = 0.01
    checkpoint: Literal["best", "last"] = "best"
    device: str = "auto"
    batch_size: PositiveInt = 512
    grid_images: NonNegativeInt = 32
    trust_checkpoint: bool = False
    trust_packages: list[str] = field(default_factory=list)


@dataclass
class ExportOptions:
    """The options of ``aelab-export`` (``conf/export.yaml``)."""

    run: str
    format: Literal["onnx", "torchscript", "safetensors"] = "onnx"
    part: Literal["encoder", "decoder", "autoencoder"] = "autoencoder"
    out: str | None = None
    checkpoint: Literal["best", "last"] = "best"
    batch: PositiveInt = 16
    tolerance: PositiveFloat = 1e-4
    opset: PositiveInt = 18
    trust_checkpoint: bool = False
    trust_packages: list[str] = field(default_factory=list)
