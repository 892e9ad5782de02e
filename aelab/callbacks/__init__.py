"""Lightning callbacks: image grids, overfitting gap, metric history, failure checkpoints, step seeding, Optuna pruning."""

from aelab.callbacks.failure import SaveOnFailure
from aelab.callbacks.faults import FaultInjection
from aelab.callbacks.gap import OverfittingGap
from aelab.callbacks.generation import GenerationGrids
from aelab.callbacks.history import MetricsHistory
from aelab.callbacks.pruning import OptunaPruning
from aelab.callbacks.samples import ReconstructionGrid
from aelab.callbacks.seeding import StepSeeding
from aelab.callbacks.timing import Timing

__all__ = ["StepSeeding", "OptunaPruning", "FaultInjection", "GenerationGrids", "MetricsHistory", "OverfittingGap", "ReconstructionGrid", "SaveOnFailure", "Timing"]
