"""Regularisers of the code, configured on the one Autoencoder (not copies of it).

* :class:`SparsityPenalty` — a sparse autoencoder: L1 on the code, or the KL
  divergence between a target activation ρ and each unit's mean activation ρ̂
  (Ng's sparse autoencoder; needs a sigmoid code).
* :class:`ContractivePenalty` — a contractive autoencoder (Rifai et al. 2011):
  the squared Frobenius norm of the encoder's Jacobian ∂z/∂x, exact or by
  random projections.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from aelab.constraints import NonNegativeFloat, PositiveInt, Range
from aelab.signatures import check_arguments


class SparsityPenalty(nn.Module):
    """``weight · mean_batch Σ_j |z_j|`` (``l1``) or ``weight · Σ_j KL(ρ ‖ ρ̂_j)`` (``kl``)."""

    def __init__(self, kind: Literal["l1", "kl"] = "l1", weight: NonNegativeFloat = 1e-3,
                 target: Annotated[float, Range(gt=0, lt=1, what="a mean activation")] = 0.05):
        super().__init__()
        check_arguments(SparsityPenalty, locals(), "model.sparse")
        self.kind, self.weight, self.target = kind, float(weight), float(target)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "l1":
            return self.weight * z.abs().sum(dim=1).mean()
        rho_hat = z.mean(dim=0).clamp(1e-6, 1 - 1e-6)
        rho = self.target
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return self.weight * kl.sum()


class ContractivePenalty(nn.Module):
    """``weight · mean_batch ‖∂z/∂x‖²_F``.

    ``projections=None`` computes the Jacobian exactly (one backward pass per
    code unit); an integer ``m`` uses the unbiased estimate
    ``E_v ‖Jᵀv‖²`` with ``m`` Gaussian vectors ``v`` — cheaper for wide codes.
    The input must have ``requires_grad`` set before the encoder ran.
    """

    def __init__(self, weight: NonNegativeFloat = 1e-4, projections: PositiveInt | None = None):
        super().__init__()
        check_arguments(ContractivePenalty, locals(), "model.contractive")
        self.weight = float(weight)
        self.projections = None if projections is None else int(projections)

    def frobenius_sq(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-sample ‖∂z/∂x‖²_F (samples are independent unless the encoder uses batch norm)."""
        total = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        if self.projections is None:
            for k in range(z.shape[1]):
                (g,) = torch.autograd.grad(z[:, k].sum(), x, create_graph=True, retain_graph=True)
                total = total + g.pow(2).flatten(1).sum(1)
            return total
        for _ in range(self.projections):
            v = torch.randn_like(z)
            (g,) = torch.autograd.grad((z * v).sum(), x, create_graph=True, retain_graph=True)
            total = total + g.pow(2).flatten(1).sum(1)
        return total / self.projections

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.weight * self.frobenius_sq(x, z).mean()
