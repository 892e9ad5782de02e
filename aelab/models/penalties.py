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

from aelab.config.constraints import NonNegativeFloat, PositiveInt, Range
from aelab.config.signatures import check_arguments


class SparsityPenalty(nn.Module):
    """``weight · mean_batch Σ_j |z_j|`` (``l1``) or ``weight · Σ_j KL(ρ ‖ ρ̂_j)`` (``kl``)."""

    def __init__(
        self,
        kind: Literal["l1", "kl"] = "l1",
        weight: NonNegativeFloat = 1e-3,
        target: Annotated[float, Range(gt=0, lt=1, what="a mean activation")] = 0.05,
    ):
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


class MMDPenalty(nn.Module):
    """``weight · MMD²(q(z), p(z))`` between the batch's codes and as many draws from the prior ``N(0, I)``.

    The Wasserstein autoencoder's regulariser (Tolstikhin et al. 2018, WAE-MMD): the unbiased U-statistic
    of the squared maximum mean discrepancy with the inverse multiquadratics kernel
    ``k(x, y) = C / (C + ‖x − y‖²)``, summed over the scales ``C = s · 2·D·σ²`` (σ² = 1, the prior's variance;
    the paper's code uses s in {0.1, 0.2, 0.5, 1, 2, 5, 10}). ``weight`` is λ in units of the per-pixel MSE:
    the paper's λ = 10 on the summed squared error of a 28×28 image is ``weight ≈ 10 / 784 ≈ 0.013``.
    """

    def __init__(
        self,
        weight: NonNegativeFloat = 0.01,
        kernel: Literal["imq", "rbf"] = "imq",
        scales: list[Annotated[float, Range(gt=0, what="a kernel scale")]] | None = None,
    ):
        super().__init__()
        check_arguments(MMDPenalty, locals(), "model.mmd")
        self.weight, self.kernel = float(weight), kernel
        self.scales = [float(s) for s in (scales or (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0))]

    def _kernel_sum(self, sq_dist: torch.Tensor, dim: int) -> torch.Tensor:
        out = torch.zeros_like(sq_dist)
        for s in self.scales:
            c = 2.0 * dim * s
            out = out + (c / (c + sq_dist) if self.kernel == "imq" else torch.exp(-sq_dist / c))
        return out

    def mmd(self, z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The unbiased estimate of MMD² between the rows of ``z`` and of ``prior`` (both ``[n, D]``, n ≥ 2)."""
        n, dim = z.shape
        off = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
        k_zz = self._kernel_sum(torch.cdist(z, z).pow(2), dim)
        k_pp = self._kernel_sum(torch.cdist(prior, prior).pow(2), dim)
        k_zp = self._kernel_sum(torch.cdist(z, prior).pow(2), dim)
        return ((k_zz * off).sum() + (k_pp * off).sum()) / (n * (n - 1)) - 2.0 * k_zp.mean()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] < 2:
            return z.new_zeros(())
        return self.weight * self.mmd(z, torch.randn_like(z))
