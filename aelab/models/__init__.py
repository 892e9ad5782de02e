"""LightningModules of the autoencoder family: one deterministic Autoencoder (plain, denoising, sparse,
contractive, linear, WAE-MMD are its options), VQ-VAE, and the VAE family (VAE, β-VAE, β-TC-VAE, IWAE),
on the shared ReconstructionModule."""

from aelab.models.autoencoder import Autoencoder
from aelab.models.base import ReconstructionModule
from aelab.models.iwae import IWAE
from aelab.models.penalties import ContractivePenalty, MMDPenalty, SparsityPenalty
from aelab.models.tcvae import BetaTCVAE
from aelab.models.vae import VAE
from aelab.models.vqvae import VQVAE

__all__ = [
    "IWAE",
    "VAE",
    "VQVAE",
    "Autoencoder",
    "BetaTCVAE",
    "ContractivePenalty",
    "MMDPenalty",
    "ReconstructionModule",
    "SparsityPenalty",
]
