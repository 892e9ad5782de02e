"""The importance-weighted autoencoder (Burda et al. 2016, *Importance Weighted Autoencoders*) as a training objective.

The VAE's nets and likelihoods, trained on the ``k``-sample bound
``L_k = E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)]`` instead of the ELBO (``L_1``). ``L_k`` is tighter for larger
``k``, so the model fits ``log p(x)`` better — ``test/nll_iwae`` (the same estimate with ``iwae_samples``
samples) comes out lower than a VAE's with the same nets — while the posterior is free to be less like
the prior (more active units). Validation reports ``val/loss`` = ``−L_k`` next to the one-sample ELBO.
"""

from __future__ import annotations

import math

import torch

from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.errors import ConfigError
from aelab.metric_info import stage_metrics
from aelab.models.vae import VAE


class IWAE(VAE):
    """IWAE-k: the VAE trained on the importance-weighted bound with ``train_samples`` samples.

    Args:
        train_samples: k of the training bound (Burda et al. use 5 and 50); 1 is the VAE.
        **kwargs: the options of :class:`~aelab.models.VAE` (nets, likelihood, ``iwae_samples`` of the test NLL, ...).
    """

    def __init__(self, train_samples: PositiveInt = 5, **kwargs):
        check_arguments(IWAE, locals(), "model")
        super().__init__(**kwargs)
        ignored = [
            f"model.{k}={v}"
            for k, v, neutral in (
                ("beta", self.beta, 1.0),
                ("free_bits", self.free_bits, 0.0),
                ("kl_warmup_steps", self.kl_warmup_steps, 0),
            )
            if v != neutral
        ]
        if ignored:
            raise ConfigError(
                f"{', '.join(ignored)} do(es) not apply to the IWAE bound, which has no separate KL term; "
                "use model=vae or model=beta_vae for a weighted KL"
            )
        self.train_samples = int(train_samples)
        self.register_metric_keys(self.metric_keys + ["iwae_bound"])

    def terms(
        self, x_in: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        terms = super().terms(x_in, x, generator)
        log_w = self.log_weights(x_in, x, self.train_samples, generator)
        terms["iwae_bound"] = torch.logsumexp(log_w, dim=0) - math.log(self.train_samples)
        return terms

    def per_image_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-image ``−L_k`` (β, warm-up and free bits do not apply to the bound)."""
        return -terms["iwae_bound"]

    def step_values(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"iwae_bound": terms["iwae_bound"].mean()}

    def extra_metrics(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"iwae_bound": terms["iwae_bound"]}

    def metric_info(self):
        return super().metric_info() + stage_metrics(
            "iwae_bound", f"IWAE bound L_{self.train_samples} (nats)", True, columns=(), summary_stage=None
        )
