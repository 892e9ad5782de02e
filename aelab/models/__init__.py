"""LightningModules of the autoencoder family: one deterministic Autoencoder (plain, denoising, sparse,
contractive, linear are its options) and the VAE family, on the shared ReconstructionModule."""

from aelab.models.autoencoder import Autoencoder
from aelab.models.base import ReconstructionModule
from aelab.models.penalties import ContractivePenalty, SparsityPenalty
from aelab.models.vae import VAE

__all__ = ["Autoencoder", "ContractivePenalty", "ReconstructionModule", "SparsityPenalty", "VAE"]
