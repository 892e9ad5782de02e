"""The top-level options of ``aelab-train`` (``conf/config.yaml``), as a typed dataclass.

The early config check (:mod:`aelab.config.checks`) reads this class from source
for the top-level keys, as it reads the components' signatures for the groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aelab.config.constraints import NonNegativeFloat, NonNegativeInt, PositiveInt


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
    ckpt_path: str | None = None
    nonfinite_loss: Literal["stop", "skip"] = "stop"
    steps_per_call: PositiveInt = 8
    test: bool = True
    test_ckpt: Literal["best", "last"] = "best"
    optimized_metric: str = "val/recon_loss"
    threads: PositiveInt | None = None
    compile: bool = False
    tags: list[str] = field(default_factory=list)
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
