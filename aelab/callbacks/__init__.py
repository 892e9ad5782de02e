"""Lightning callbacks: image grids, overfitting gap, metric history, failure checkpoints, step seeding."""

from aelab.callbacks.failure import SaveOnFailure
from aelab.callbacks.faults import FaultInjection
from aelab.callbacks.gap import OverfittingGap
from aelab.callbacks.generation import GenerationGrids, write_generation
from aelab.callbacks.history import MetricsHistory
from aelab.callbacks.images import image_grid, publish_image
from aelab.callbacks.samples import ReconstructionGrid
from aelab.callbacks.seeding import StepSeeding

__all__ = ["StepSeeding", "FaultInjection", "GenerationGrids", "MetricsHistory", "OverfittingGap", "write_generation", "ReconstructionGrid", "SaveOnFailure", "image_grid", "publish_image"]
