"""LightningModules of the autoencoder family."""

from aelab.models.autoencoder import Autoencoder
from aelab.models.base import ReconstructionModule, higher_is_better

__all__ = ["Autoencoder", "ReconstructionModule", "higher_is_better"]
