"""LightningModules of the autoencoder family."""

from aelab.models.autoencoder import Autoencoder
from aelab.models.base import ReconstructionModule, higher_is_better
from aelab.models.vae import VAE

__all__ = ["Autoencoder", "ReconstructionModule", "VAE", "higher_is_better"]
