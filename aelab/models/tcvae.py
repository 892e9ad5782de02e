"""β-TC-VAE (Chen et al. 2018, *Isolating Sources of Disentanglement in VAEs*): the VAE with its KL term split in three.

``E_x KL(q(z|x) ‖ p(z)) = I_q(x; z) + KL(q(z) ‖ Π_j q(z_j)) + Σ_j KL(q(z_j) ‖ p(z_j))`` — the index-code mutual
information, the **total correlation** (TC) and the dimension-wise KL — weighted ``α``, ``β``, ``γ``. The
aggregate posterior ``q(z) = (1/N) Σ_n q(z|x_n)`` and its marginals are estimated on the minibatch:

* ``sampling="mws"`` — minibatch-weighted sampling, the paper's estimator (its eq. S7 and the authors' code):
  ``log q(z_i) ≈ log Σ_j q(z_i|x_j) − log(N·M)`` and likewise per dimension. Its gradients are those of
  the decomposition, but the logged terms carry a bias of order ``(D − 1)·log M`` (the marginals are
  normalised by ``N·M`` although ``M`` of the batch's posteriors overlap);
* ``sampling="mss"`` — minibatch stratified sampling (the paper's appendix): importance weights
  ``1/N`` for the sample's own posterior, ``1/(M−1)`` for the others (one stratum weight ``(N−M+1)/(N(M−1))``),
  nearly unbiased values — the default, so that ``train/tc`` and ``val/tc`` read as nats of total correlation
  (with MWS a 10-dimensional code on batches of 64 logs a TC near 70 nats that is mostly this bias).

``N`` is the training set's size (``dataset_size``, taken from the data at the start of fit when null).
``α = γ = 1, β = 1`` gives the plain VAE objective back (up to the estimator's noise).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from aelab.config.constraints import NonNegativeFloat, PositiveInt
from aelab.config.signatures import check_arguments
from aelab.errors import ConfigError
from aelab.metric_info import MetricInfo, stage_metrics
from aelab.models.vae import VAE, gaussian_log_density


def stratified_log_weights(batch_size: int, dataset_size: int, device=None) -> torch.Tensor:
    """Log importance weights ``[M, M]`` of minibatch stratified sampling (Chen et al. 2018, appendix C.2)."""
    n, m = dataset_size, batch_size - 1
    if m < 1:
        return torch.zeros(batch_size, batch_size, device=device)
    strat = (n - m) / (n * m)
    w = torch.full((batch_size, batch_size), 1.0 / m, device=device)
    w.view(-1)[:: m + 1] = 1.0 / n
    w.view(-1)[1 :: m + 1] = strat
    w[m - 1, 0] = strat
    return w.log()


def decomposed_kl(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int, sampling: Literal["mws", "mss"] = "mws"
) -> dict[str, torch.Tensor]:
    """Per-sample estimates of the index-code MI, total correlation and dimension-wise KL of a minibatch.

    ``z`` are samples from ``q(z|x_i)`` with mean ``mu`` and log variance ``logvar`` (all ``[M, D]``).
    """
    m = z.shape[0]
    log_qz_x, log_pz = gaussian_log_density(z, mu, logvar), gaussian_log_density(z)
    pair = gaussian_log_density(z[:, None, :], mu[None], logvar[None], per_dim=True)  # [M, M, D]: log q(z_i,d | x_j)
    if sampling == "mws":
        norm = math.log(m * dataset_size)
        log_qz = torch.logsumexp(pair.sum(2), dim=1) - norm
        log_prod = (torch.logsumexp(pair, dim=1) - norm).sum(1)
    else:
        w = stratified_log_weights(m, dataset_size, z.device).to(z.dtype)
        log_qz = torch.logsumexp(w + pair.sum(2), dim=1)
        log_prod = torch.logsumexp(w[:, :, None] + pair, dim=1).sum(1)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod, "dwkl": log_prod - log_pz}


class BetaTCVAE(VAE):
    """β-TC-VAE: ``−log p(x|z) + w(t)·(α·MI + β·TC + γ·dimension-wise KL)`` (see the module docstring).

    Args:
        alpha: weight of the index-code mutual information.
        beta: weight of the total correlation (the paper's β; 6 in its dSprites runs).
        gamma: weight of the dimension-wise KL.
        sampling: ``mws`` (minibatch-weighted sampling) or ``mss`` (stratified).
        dataset_size: N of the estimator; null = the training split's size.
        **kwargs: the options of :class:`~aelab.models.VAE` (nets, likelihood, warm-up, IWAE, ...).
    """

    def __init__(
        self,
        alpha: NonNegativeFloat = 1.0,
        beta: NonNegativeFloat = 6.0,
        gamma: NonNegativeFloat = 1.0,
        sampling: Literal["mws", "mss"] = "mss",
        dataset_size: PositiveInt | None = None,
        **kwargs,
    ):
        check_arguments(BetaTCVAE, locals(), "model")
        super().__init__(beta=beta, **kwargs)
        if self.free_bits > 0:
            raise ConfigError(
                f"model.free_bits={self.free_bits} does not apply to the β-TC-VAE, whose KL is split into "
                "three weighted terms (use alpha, beta, gamma)"
            )
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.tc_sampling = sampling
        self.dataset_size = None if dataset_size is None else int(dataset_size)
        self.register_metric_keys(self.metric_keys + ["tc"])

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.dataset_size is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            splits = getattr(datamodule, "splits", None) or {}
            self.dataset_size = len(splits["train"]) if "train" in splits else None

    def terms(
        self, x_in: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The VAE's one-sample terms plus the per-image ``mi``, ``tc`` and ``dwkl`` estimated on this batch."""
        terms = super().terms(x_in, x, generator)
        n = self.dataset_size or terms["z"].shape[0]
        terms.update(decomposed_kl(terms["z"], terms["mu"], terms["logvar"], n, self.tc_sampling))
        return terms

    def kl_weight(self) -> float:
        """The warm-up factor alone (α, β, γ weigh the three terms)."""
        return 1.0 if self.kl_warmup_steps <= 0 else min(1.0, self.global_step / self.kl_warmup_steps)

    def per_image_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return terms["recon"] + self.kl_weight() * (
            self.alpha * terms["mi"] + self.beta * terms["tc"] + self.gamma * terms["dwkl"]
        )

    def step_values(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: terms[k].mean() for k in ("mi", "tc", "dwkl")}

    def extra_metrics(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"tc": terms["tc"]}

    def metric_info(self) -> list[MetricInfo]:
        infos = super().metric_info()
        infos += stage_metrics(
            "tc", "total correlation (nats, minibatch estimate)", None, columns=(), summary_stage=None
        )
        infos += [
            MetricInfo("train/mi", "index-code MI (nats)", None),
            MetricInfo("train/dwkl", "dimension-wise KL (nats)", None),
        ]
        return infos
