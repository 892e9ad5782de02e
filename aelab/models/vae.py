"""The variational autoencoder family: VAE, β-VAE, conv VAE — one module, options for each.

Encoder nets from ``aelab.nets`` output ``2 × latent`` numbers (mean and log
variance of a diagonal Gaussian q(z|x)); the decoder maps a latent sample to
the parameters of p(x|z):

* ``likelihood="bernoulli"`` — logits of independent Bernoullis (for [0, 1] or
  binarized pixels; the ELBO and NLL are in nats per image);
* ``likelihood="gaussian"`` — mean ``sigmoid(out)`` with a fixed standard
  deviation ``sigma`` or a learned one (one scalar, ``learn_sigma=true``).

The training objective, per image, is ``−log p(x|z) + β·w(t)·KL_fb`` with
``w(t)`` a linear KL warm-up over ``kl_warmup_steps`` steps and ``KL_fb`` the KL
divergence with each dimension clamped below at ``free_bits`` nats. Validation
computes the same objective (``val/loss``) on the same kind of data, and the
true ELBO (β = 1, no warm-up, no free bits) for both sides of ``gap/elbo``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from aelab.config.constraints import Bottleneck, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from aelab.config.signatures import check_arguments
from aelab.data.noise import Corruption
from aelab.errors import ConfigError
from aelab.metric_info import MetricInfo, stage_metrics
from aelab.models.autoencoder import NetFactory, build_nets
from aelab.models.base import ReconstructionModule

log = logging.getLogger(__name__)
ACTIVE_UNIT_THRESHOLD = 0.01  # nats: a latent dimension with more mean KL than this is "active"
LOG_2PI = math.log(2 * math.pi)


class VectorMean(Metric):
    """The mean of vectors over all updates (and all DDP ranks)."""

    full_state_update = False

    def __init__(self, size: int):
        super().__init__()
        self.add_state("total", default=torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.detach().double().sum(0)
        self.count += values.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def gaussian_log_density(
    z: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0, per_dim: bool = False
) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dimension (or per dimension); the defaults give log N(z; 0, I)."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    per = -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))
    return per if per_dim else per.sum(-1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) ‖ N(0, I)) per dimension, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(ReconstructionModule):
    """Variational autoencoder (Kingma & Welling 2014); β-VAE (Higgins et al. 2017) via ``beta``.

    Args:
        input_shape: ``(channels, height, width)`` of the images.
        bottleneck: latent size (the one knob shared with every autoencoder).
        encoder, decoder: net factories as for :class:`~aelab.models.Autoencoder`.
        likelihood: ``bernoulli`` or ``gaussian``.
        sigma, learn_sigma: the Gaussian likelihood's standard deviation (pixel units).
        beta: weight of the KL term in the training objective (β-VAE).
        kl_warmup_steps: linear warm-up of the KL weight from 0 over this many steps.
        free_bits: minimum KL per latent dimension in the objective (nats), 0 = off.
        iwae_samples: importance samples k for ``test/nll_iwae`` (0 = skip).
        iwae_chunk: decoder inputs (samples × images) per pass — bounds the estimate's memory.
        iwae_max_images: test images that get the (costly) IWAE estimate; None = all.
        monitor: the validation metric that selects the best checkpoint.
        value_range: the data's values (given by the DataModule): ``unit`` only — the means of p(x|z) are sigmoids.
    """

    gap_keys = {"elbo": -1, "recon_loss": 1}
    objective_key = "loss"
    features = ("elbo", "prior", "iwae")
    sampling = "samples from the prior N(0, I)"
    # checked by the config check (with the data's value range) before anything is built, and by check_arguments
    option_rules = (
        (
            "value_range != 'real'",
            "a VAE's p(x|z) ({path}.likelihood={likelihood}) has its means in [0, 1] (sigmoids) and cannot fit "
            "real-valued data: use model=mlp (or conv) with model.output_activation=identity",
        ),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        bottleneck: Bottleneck = 16,
        encoder: NetFactory | nn.Module | None = None,
        decoder: NetFactory | nn.Module | None = None,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        sigma: PositiveFloat = 0.1,
        learn_sigma: bool = False,
        beta: NonNegativeFloat = 1.0,
        kl_warmup_steps: NonNegativeInt = 0,
        free_bits: NonNegativeFloat = 0.0,
        iwae_samples: NonNegativeInt = 1000,
        iwae_chunk: PositiveInt = 2048,
        iwae_max_images: PositiveInt | None = None,
        noise: Corruption | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/loss",
        monitor_mode: Literal["min", "max"] = "min",
        eval_seed: int = 12345,
        val_ssim: bool = False,
        value_range: Literal["unit", "real"] = "unit",
    ):
        check_arguments(VAE, locals(), "model")
        super().__init__(
            input_shape,
            noise=noise,
            optimizer=optimizer,
            scheduler=scheduler,
            scheduler_monitor=monitor,
            eval_seed=eval_seed,
            val_ssim=val_ssim,
            value_range=value_range,
        )
        self.save_hyperparameters(ignore=["encoder", "decoder", "noise", "optimizer", "scheduler"], logger=False)
        self.latent = int(bottleneck)
        # the encoder writes mean and log variance (2 x latent), the decoder reads a latent sample
        self.encoder, self.decoder = build_nets(
            encoder, decoder, self.input_shape, self.latent, encoder_outputs=2 * self.latent
        )
        if getattr(self.decoder, "uses_indices", False):
            raise ConfigError("a VAE decodes samples, not pooled features: max-unpooling decoders do not apply")
        self.likelihood = likelihood
        self.log_sigma = nn.Parameter(torch.tensor(math.log(float(sigma))), requires_grad=bool(learn_sigma))
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.iwae_samples = int(iwae_samples)
        self.iwae_chunk = int(iwae_chunk)
        self.iwae_max_images = None if iwae_max_images is None else int(iwae_max_images)
        self.register_metric_keys(["loss", "elbo", "recon", "kl", "recon_loss"])
        self.kl_dims = nn.ModuleDict({s: VectorMean(self.latent) for s in ("val", "test")})
        self.test_nll = VectorMean(1)
        self.kl_per_dim: list[float] = []
        self._iwae_images = 0
        self._warned_grayscale = False

    # ------------------------------------------------------------ the net
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance of q(z|x) (through :meth:`code`)."""
        code = self.code(x)
        return code["mu"], code["logvar"]

    def code(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """q(z|x): ``mu`` and ``logvar``, and ``z`` = the mean code (what :meth:`encode` gives and reconstructions
        decode; training decodes samples)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return {"z": mu, "mu": mu, "logvar": logvar.clamp(-30.0, 20.0)}

    def decoder_output(self, code: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(code["z"])

    def log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image (summed over pixels), from decoder outputs ``out``."""
        if self.likelihood == "bernoulli":
            return (
                -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none")
                .flatten(-len(self.input_shape))
                .sum(-1)
            )
        mean = torch.sigmoid(out)
        log_sigma = self.log_sigma
        per = -0.5 * ((x - mean) / log_sigma.exp()).pow(2) - log_sigma - 0.5 * LOG_2PI
        return per.flatten(-len(self.input_shape)).sum(-1)

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): pixel probabilities (Bernoulli) or means (Gaussian)."""
        return torch.sigmoid(out)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from z ~ N(0, I) (the mean of p(x|z))."""
        z = torch.randn(n, self.latent, generator=generator, device=self.device)
        return self.decode(z)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batches: Iterable[dict] | None = None) -> torch.Tensor:
        """``n`` images from the prior (``batches`` are not needed)."""
        return self.sample_prior(n, torch.Generator(device=self.device).manual_seed(seed)).cpu()

    @torch.no_grad()
    def anomaly_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``mse`` (reconstruction error of the mean code) and ``elbo`` (the negative one-sample ELBO)."""
        generator = torch.Generator(device=x.device).manual_seed(0)
        return {**super().anomaly_scores(x), "elbo": -self.terms(x, x, generator)["elbo"]}

    def metric_info(self) -> list[MetricInfo]:
        infos = super().metric_info()
        infos += [MetricInfo("test/nll_iwae", "test NLL (IWAE, nats)", False, None, True)]
        infos += stage_metrics("elbo", "ELBO (nats)", True, columns=("test",))
        infos += stage_metrics("kl", "KL (nats)", None, columns=("test",), summary_stage=None)
        infos += [
            MetricInfo("val/active_units", "active latent units", None, None, True),
            MetricInfo("test/active_units", "active latent units", None),
        ]
        infos += stage_metrics("loss", "objective (negative β-ELBO)", False, columns=())
        infos += stage_metrics("recon", "−log p(x|z) (nats)", False, columns=(), summary_stage=None)
        infos += [MetricInfo("train/kl_weight", "KL weight", None), MetricInfo("train/sigma", "likelihood σ", None)]
        return infos

    # -------------------------------------------------------- objectives
    def terms(
        self, x_in: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One-sample ELBO terms per image: ``recon`` (−log p(x|z)), ``kl_dims``, ``elbo``, plus mu."""
        mu, logvar = self.posterior(x_in)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * logvar).exp() * eps
        out = self.decoder_output({"z": z})
        recon = -self.log_likelihood(out, x)
        kl_dims = kl_to_standard_normal(mu, logvar)
        kl = kl_dims.sum(1)
        return {
            "recon": recon,
            "kl_dims": kl_dims,
            "kl": kl,
            "elbo": -recon - kl,
            "mu": mu,
            "logvar": logvar,
            "z": z,
        }

    def kl_weight(self) -> float:
        """β times the warm-up factor at the current step."""
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, self.global_step / self.kl_warmup_steps)

    def per_image_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-image training objective: −log p(x|z) + β·w(t)·Σ_j max(KL_j, free_bits)."""
        kl = terms["kl_dims"].clamp(min=self.free_bits).sum(1) if self.free_bits > 0 else terms["kl"]
        weight = self.kl_weight()
        return terms["recon"] + (kl if weight == 1.0 else weight * kl)  # × 1.0 is exact: one op fewer a step

    def _warn_grayscale(self, x: torch.Tensor) -> None:
        if self.likelihood == "bernoulli" and not self._warned_grayscale:
            self._warned_grayscale = True
            if ((x > 0) & (x < 1)).any():
                log.warning(
                    "Bernoulli likelihood on grayscale pixels: the ELBO and NLL are cross-entropies, not "
                    "likelihoods comparable with published numbers; set data.binarize=dynamic for those"
                )

    def objective(self, x: torch.Tensor, x_in: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean per-image objective (:meth:`per_image_objective`) on a one-sample ELBO of ``x`` from ``x_in``."""
        self._warn_grayscale(x)
        terms = self.terms(x_in, x)
        loss = self.per_image_objective(terms).mean()
        values = {"loss": loss}
        if self.logging_step:  # the rest only where it is written or shown
            values.update(
                elbo=terms["elbo"].mean(),
                recon=terms["recon"].mean(),
                kl=terms["kl"].mean(),
                kl_weight=self.kl_weight(),
            )
            if self.log_sigma.requires_grad:
                values["sigma"] = self.log_sigma.exp()
            values.update(self.step_values(terms))
        return loss, values

    def per_sample_metrics(self, x: torch.Tensor, generator: torch.Generator | None):
        x_in = self.noise(x, generator)
        terms = self.terms(x_in, x, generator)
        x_hat = self.decode(terms["mu"])
        metrics = {
            "loss": self.per_image_objective(terms),
            "elbo": terms["elbo"],
            "recon": terms["recon"],
            "kl": terms["kl"],
            "recon_loss": (x_hat - x).pow(2).flatten(1).mean(1),
            "_kl_dims": terms["kl_dims"],
            **self.extra_metrics(terms),
        }
        return metrics, x_in, x_hat

    def step_values(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Objective-specific training values logged beside the ELBO terms, names without ``train/`` (none for the
        VAE)."""
        return {}

    def extra_metrics(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Objective-specific per-image validation/test metrics (registered with :meth:`register_metric_keys`)."""
        return {}

    def update_extras(self, stage: str, extras: dict[str, torch.Tensor], x: torch.Tensor) -> None:
        """KL per latent dimension (val/test) and the IWAE estimate (test only)."""
        self.kl_dims[stage].update(extras["_kl_dims"])
        if stage == "test" and self.iwae_samples > 0:
            budget = self.iwae_max_images
            if budget is None or self._iwae_images < budget:
                take = x if budget is None else x[: budget - self._iwae_images]
                bound = self.iwae_bound(take, self.iwae_samples, self._eval_generator)
                self.test_nll.update(-bound[:, None])
                self._iwae_images += take.shape[0]

    def _log_kl_dims(self, stage: str) -> None:
        kl = self.kl_dims[stage].compute()
        self.kl_per_dim = [float(v) for v in kl]
        self.log(f"{stage}/active_units", float((kl > ACTIVE_UNIT_THRESHOLD).sum()), sync_dist=False)
        self.kl_dims[stage].reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_kl_dims("val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.test_nll.reset()
        self._iwae_images = 0

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_kl_dims("test")
        if self.iwae_samples > 0 and int(self.test_nll.count) > 0:
            self.log("test/nll_iwae", self.test_nll.compute().reshape(-1)[0], sync_dist=False)

    # --------------------------------------------------------------- IWAE
    def log_weights(
        self, x_in: torch.Tensor, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``log p(x, z_i) − log q(z_i|x_in)`` for ``k`` samples ``z_i ~ q(z|x_in)``: ``[k, B]`` (differentiable).

        The decoder sees at most ``iwae_chunk`` (samples × images) inputs per pass.
        """
        mu, logvar = self.posterior(x_in)
        std = (0.5 * logvar).exp()
        log_weights = []
        per_pass = max(1, self.iwae_chunk // x.shape[0])  # samples per decoder pass
        for start in range(0, k, per_pass):
            kc = min(per_pass, k - start)
            eps = torch.randn((kc, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps  # [kc, B, D]
            out = self.decoder_output({"z": z.reshape(-1, self.latent)}).reshape(kc, x.shape[0], *x.shape[1:])
            log_px_z = self.log_likelihood(out, x.unsqueeze(0))
            log_pz = gaussian_log_density(z)
            log_qz = gaussian_log_density(z, mu, logvar)
            log_weights.append(log_px_z + log_pz - log_qz)
        return torch.cat(log_weights, dim=0)

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The importance-weighted bound L_k (Burda et al. 2016) per image, in nats.

        ``log (1/k) Σ_i p(x, z_i) / q(z_i|x)`` with ``z_i ~ q(z|x)``. L_1 is a one-sample ELBO estimate and
        L_k grows towards log p(x) with k; its negative is the NLL estimate.
        """
        if x.shape[0] > self.iwae_chunk:  # bound the decoder batch: images in groups, then samples
            return torch.cat([self.iwae_bound(part, k, generator) for part in x.split(self.iwae_chunk)])
        return torch.logsumexp(self.log_weights(x, x, k, generator), dim=0) - math.log(k)

    def summary_extras(self) -> dict[str, Any]:
        """VAE facts for metrics.json: KL per latent dimension and the IWAE settings."""
        extras: dict[str, Any] = {"kl_per_dim": self.kl_per_dim, "latent_size": self.latent}
        if self.iwae_samples > 0:
            extras["nll_iwae"] = {"samples": self.iwae_samples, "images": self._iwae_images}
        return extras
