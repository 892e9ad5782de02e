"""Lightning callbacks: progress bar, image grids, overfitting gap, metric history, failure checkpoints, step seeding,
Optuna pruning.
"""

from aelab.callbacks.failure import SaveOnFailure
from aelab.callbacks.faults import FaultInjection
from aelab.callbacks.gap import OverfittingGap
from aelab.callbacks.generation import GenerationGrids
from aelab.callbacks.history import MetricsHistory
from aelab.callbacks.progress import ProgressBar
from aelab.callbacks.pruning import OptunaPruning
from aelab.callbacks.samples import ReconstructionGrid
from aelab.callbacks.seeding import StepSeeding
from aelab.callbacks.timing import Timing

__all__ = [
    "StepSeeding",
    "ProgressBar",
    "OptunaPruning",
    "FaultInjection",
    "GenerationGrids",
    "MetricsHistory",
    "OverfittingGap",
    "ReconstructionGrid",
    "SaveOnFailure",
    "Timing",
]
