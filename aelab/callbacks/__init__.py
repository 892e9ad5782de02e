"""Lightning callbacks: image grids, overfitting gap, metric history, failure checkpoints."""

from aelab.callbacks.failure import SaveOnFailure
from aelab.callbacks.gap import OverfittingGap
from aelab.callbacks.generation import GenerationGrids, write_generation
from aelab.callbacks.history import MetricsHistory
from aelab.callbacks.images import image_grid, publish_image
from aelab.callbacks.samples import ReconstructionGrid

__all__ = ["GenerationGrids", "MetricsHistory", "OverfittingGap", "write_generation", "ReconstructionGrid", "SaveOnFailure", "image_grid", "publish_image"]
