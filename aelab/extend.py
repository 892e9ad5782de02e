"""The extension API: everything a researcher's own model, dataset or evaluation imports, in one stable place.

    from aelab.extend import Autoencoder, ImageDataModule, EvalTask, EvalResult, MetricInfo, PositiveInt,
    check_arguments

``docs/extending.md`` shows each recipe. Names here keep their meaning across aelab releases;
the modules they come from may move (aelab 0.2 moved ``aelab.constraints``, ``aelab.signatures``
and ``aelab.batches``: those old paths still work for one release, with a warning).
"""

from aelab.config.constraints import (
    Bottleneck,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
)
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.data.datamodule import ImageDataModule, ImageSet
from aelab.data.noise import Corruption
from aelab.errors import AelabError, ConfigError
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo, stage_metrics
from aelab.models.autoencoder import Autoencoder
from aelab.models.base import ReconstructionModule
from aelab.models.vae import VAE

__all__ = [
    "VAE",
    "AelabError",
    "Autoencoder",
    "Bottleneck",
    "ConfigError",
    "Corruption",
    "EvalResult",
    "EvalTask",
    "ImageDataModule",
    "ImageSet",
    "MetricInfo",
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Range",
    "ReconstructionModule",
    "check_arguments",
    "map_batches",
    "stage_metrics",
]
