"""What every aelab LightningModule shares: corruption, evaluation metrics, optimizers, the model contract.

A model defines

* ``code(x)`` — its code path, the one hook: what the encoder side makes of images ``x``, a dict whose
  ``"z"`` is the code the decoder reads. ``forward``, ``encode``, ``reconstruct``, ``infer``, the
  training objective, ``per_sample_metrics`` and every evaluation go through it (a model changing its
  code — a top-k sparse code, a quantised one — overrides this alone);
* ``decoder_output(code)`` and ``mean_image(out)`` — the decoder side;
* ``objective(x, x_in)`` → ``(loss, values to log)``: the training step itself is the base class's
  (:mod:`aelab.models.step`);
* ``per_sample_metrics(x, generator)`` → ``(metrics, x_corrupted, x_hat)`` with
  one value per image for each metric (the validation/test quantities),
* ``gap_keys`` — which metrics enter the overfitting gap and their sign,
* ``metric_info()`` — what each logged metric means (direction, label, summary, table column),
* ``features`` — what it offers beyond reconstruction (``elbo``, ``prior``, ``iwae``),
  which evaluation tasks ask for,
* ``anomaly_scores(x)`` and ``sample(n)``, with defaults here.

Validation and test corrupt inputs with a generator reseeded at the start of
every evaluation, so their numbers repeat from epoch to epoch and run to run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, SumMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from aelab.data.batches import map_batches
from aelab.data.noise import Corruption, NoCorruption
from aelab.metric_info import MetricInfo, stage_metrics
from aelab.models.step import TrainingStep, refuse_moved_overrides


def _ssim_kernel(height: int, width: int) -> int:
    k = min(11, height, width)
    return k if k % 2 else k - 1


class ReconstructionModule(TrainingStep):
    """Base LightningModule of the autoencoder family (see module docstring)."""

    #: per-sample metric name → +1 if gap = val − train, −1 if gap = train − val
    gap_keys: dict[str, int] = {"recon_loss": 1}
    #: what ``recon_loss`` measures, for labels
    recon_label = "reconstruction MSE"
    #: how much each latent dimension is used (a VAE's mean KL per dimension, nats); empty: no such measure
    kl_per_dim: list[float] = []
    #: what the model offers beyond encoding and reconstructing (evaluation tasks ask for these)
    features: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        input_shape: Iterable[int],
        noise: Corruption | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/recon_loss",
        eval_seed: int = 12345,
        val_ssim: bool = False,
        value_range: Literal["unit", "real"] = "unit",
    ):
        super().__init__()
        refuse_moved_overrides(type(self), ReconstructionModule)
        self.input_shape = tuple(int(s) for s in input_shape)
        #: the data's values (the DataModule's ``value_range``): ``unit`` — in [0, 1], reconstructions clamped to it,
        #: PSNR (and SSIM for images) reported — or ``real``: nothing clamped, no PSNR/SSIM, no image grids
        self.value_range = value_range
        self.image_metrics = value_range == "unit"
        self.noise = noise if noise is not None else NoCorruption()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.eval_seed = int(eval_seed)
        self._eval_generator: torch.Generator | None = None
        self.stage_means = nn.ModuleDict()
        self.stage_counts = nn.ModuleDict({stage: SumMetric() for stage in ("val", "test")})
        self.is_images = len(self.input_shape) == 3  # else vectors (D,): no SSIM, no image grids
        #: SSIM at every validation, not only in the test pass (about 0.8 s per epoch on 5,000 images on 2 CPU cores)
        self.val_ssim = bool(val_ssim)
        dims = tuple(range(1, len(self.input_shape) + 1))
        if self.image_metrics:  # PSNR with data_range=1 means something for [0, 1] values, vectors too
            self.psnr = nn.ModuleDict(
                {
                    s: PeakSignalNoiseRatio(data_range=1.0, dim=dims, reduction="elementwise_mean")
                    for s in ("val", "test")
                }
            )
        if self.is_images and self.image_metrics:
            _, h, w = self.input_shape
            self.ssim = nn.ModuleDict(
                {
                    s: StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=_ssim_kernel(h, w))
                    for s in ("val", "test")
                }
            )

    # ------------------------------------------------------------ the code path: one hook
    def code(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The code path, the model's one hook: what its encoder side makes of images ``x``.

        ``"z"`` is the code the decoder reads (and :meth:`encode` returns: the mean code for VAEs); other
        entries are what the objective needs (a VAE's ``mu`` and ``logvar``, a VQ-VAE's ``indices``).
        Training, :meth:`forward`, :meth:`encode`, :meth:`reconstruct`, :meth:`infer` and every evaluation
        call it; override it (calling ``super().code(x)``) to change the code everywhere at once.
        """
        raise NotImplementedError(f"{type(self).__name__} must define code(x)")

    def decoder_output(self, code: dict[str, torch.Tensor]) -> torch.Tensor:
        """The decoder's output for a code from :meth:`code` (before :meth:`mean_image`)."""
        raise NotImplementedError(f"{type(self).__name__} must define decoder_output(code)")

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """Images from decoder outputs (the output activation; for VAEs the mean of p(x|z))."""
        raise NotImplementedError(f"{type(self).__name__} must define mean_image(out)")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass through the code path: :meth:`code`'s entries and the decoder's output ``"out"``."""
        code = self.code(x)
        return {**code, "out": self.decoder_output(code)}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of images ``x`` (the mean code for VAEs): :meth:`code`'s ``"z"``."""
        return self.code(x)["z"]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images decoded from codes ``z`` (in the data's range: see :meth:`in_range`)."""
        return self.in_range(self.mean_image(self.decoder_output({"z": z})))

    def in_range(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs ``x`` as values of the data: clamped to [0, 1] for unit data, as they are for real-valued
        data (``value_range``). What :meth:`decode`, :meth:`infer`, predictions and exports return."""
        return x.clamp(0, 1) if self.value_range == "unit" else x

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of (possibly corrupted) images ``x``, through the code path."""
        return self.mean_image(self(x)["out"])

    def per_sample_metrics(
        self, x: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Evaluate clean images ``x``: per-image metrics, corrupted input, reconstruction."""
        raise NotImplementedError

    @property
    def bottleneck(self) -> int:
        return int(self.hparams["bottleneck"])

    def metric_info(self) -> list[MetricInfo]:
        """What the metrics this model logs mean; subclasses add theirs (see :mod:`aelab.metric_info`)."""
        infos = stage_metrics("recon_loss", self.recon_label, False, columns=("test", "best/val"))
        for key in self.gap_keys:
            infos.append(
                MetricInfo(f"gap/{key}", f"overfitting gap (val − train {key.replace('_', ' ')})", None, "last", True)
            )
            infos.append(MetricInfo(f"gap/{key}_ci95", "± (95 % interval of the gap)", None, "last"))
            infos.append(MetricInfo(f"train_eval/{key}", f"train {key.replace('_', ' ')} (eval mode)", None))
        if self.image_metrics:
            psnr = stage_metrics("psnr", "PSNR (dB)", True, stages=("val", "test"))
            if self.recon_label == "reconstruction MSE":  # the same squared error in decibels: no panel of its own
                psnr = [replace(i, restates=i.key.replace("/psnr", "/recon_loss")) for i in psnr]
            infos += psnr
        if self.is_images and self.image_metrics:
            infos += stage_metrics(
                "ssim", "SSIM", True, stages=("val", "test") if self.val_ssim else ("test",), summary_stage=None
            )
        return infos

    @torch.no_grad()
    def anomaly_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image anomaly scores of clean images ``x``: ``mse``, the reconstruction error."""
        return {"mse": self.error_map(x).flatten(1).mean(1)}

    @torch.no_grad()
    def error_map(self, x: torch.Tensor, recon: torch.Tensor | None = None) -> torch.Tensor:
        """Per-pixel squared reconstruction error of ``x`` (or of a given ``recon``), averaged over channels:
        ``[N, 1, H, W]`` (vectors: ``[N, D]``)."""
        err = ((self.reconstruct(x) if recon is None else recon) - x).pow(2)
        return err.mean(1, keepdim=True) if err.dim() == 4 else err

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, reconstructions in the data's range)`` of ``x`` in one pass (what prediction needs)."""
        out = self(x)
        return out["z"], self.in_range(self.mean_image(out["out"]))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batches: Iterable[dict] | None = None) -> torch.Tensor:
        """``n`` generated images: codes drawn from a Gaussian fitted to the codes of ``batches`` (training images).

        A deterministic autoencoder has no prior; VAEs override this with theirs.
        """
        if batches is None:
            raise ValueError(
                "a deterministic autoencoder samples from a Gaussian fitted to training codes: pass batches"
            )
        codes = map_batches(batches, lambda b: {"z": self.encode(b["image"])})["z"]
        mean = codes.mean(0)
        centred = codes - mean
        if codes.shape[1] > min(self.FULL_COVARIANCE_MAX_DIM, codes.shape[0]):
            # a D×D covariance of a huge code (100,000 dims: 40 GB) is out of reach, and with fewer codes than
            # dimensions it could not be estimated anyway: independent dimensions instead
            self.sampling = "codes from a Gaussian with independent dimensions fitted to the training codes"
            std = centred.std(0).clamp(min=1e-6)
            torch.manual_seed(seed)
            return self.decode((mean + std * torch.randn(n, codes.shape[1])).to(self.device)).cpu()
        cov = centred.T @ centred / max(1, codes.shape[0] - 1)
        cov = cov + 1e-5 * torch.eye(cov.shape[0]) * cov.diagonal().mean().clamp(min=1e-8)
        dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        torch.manual_seed(seed)
        return self.decode(dist.sample((n,)).to(self.device)).cpu()

    #: the largest code size whose full covariance :meth:`sample` fits (4096² floats: 64 MB)
    FULL_COVARIANCE_MAX_DIM = 4096

    #: how :meth:`sample` draws codes, for captions
    sampling = "codes from a Gaussian fitted to the training codes"

    # --------------------------------------------------------- evaluation
    def eval_generator(self) -> torch.Generator:
        """A generator on the model's device, seeded with ``eval_seed`` (fresh each call)."""
        return torch.Generator(device=self.device).manual_seed(self.eval_seed)

    def register_metric_keys(self, keys: Iterable[str]) -> None:
        """Create the val/test running means for the per-sample metrics ``keys``.

        Called from a subclass's ``__init__``: Lightning finds logged metric
        objects among the module's attributes once, so they must exist early.
        """
        self.metric_keys = list(keys)
        for stage in ("val", "test"):
            for key in self.metric_keys:
                self.stage_means[f"{stage}__{key}"] = MeanMetric()
        for key in self.gap_keys:  # second moments: the spread of the validation side of the gap
            if key in self.metric_keys:
                self.stage_means[f"val__{key}__sq"] = MeanMetric()

    def _means(self, stage: str, keys: Iterable[str]) -> dict[str, MeanMetric]:
        return {key: self.stage_means[f"{stage}__{key}"] for key in keys}

    def stage_mean(self, stage: str, key: str) -> torch.Tensor:
        """The running mean of ``key`` in the current ``stage`` epoch (synced across ranks)."""
        return self.stage_means[f"{stage}__{key}"].compute()

    def stage_variance(self, stage: str, key: str) -> float | None:
        """The variance over images of ``key`` in the current ``stage`` epoch, when its second moment is kept."""
        square = self.stage_means[f"{stage}__{key}__sq"] if f"{stage}__{key}__sq" in self.stage_means else None
        if square is None or square.update_count == 0:
            return None
        mean = float(self.stage_mean(stage, key))
        return max(0.0, float(square.compute()) - mean * mean)

    def stage_count(self, stage: str) -> int:
        """How many images the current ``stage`` epoch has evaluated (all ranks)."""
        return int(self.stage_counts[stage].compute().item())

    def on_validation_epoch_start(self) -> None:
        self._eval_generator = self.eval_generator()
        self._reset_stage("val")

    def on_test_epoch_start(self) -> None:
        self._eval_generator = self.eval_generator()
        self._reset_stage("test")

    def _reset_stage(self, stage: str) -> None:
        """Start the ``stage``'s metrics from nothing: the one place they are reset. Lightning resets the logged ones
        after each evaluation, but not the image count and the squares' means (not logged; they stay readable until
        the next epoch starts), and an evaluation stopped midway (an exception, Ctrl-C) leaves them all updated: they
        would carry its images into the next epoch, and :meth:`_log_metric`, which logs at a metric's first update,
        would never log them again."""
        for name, metric in self.stage_means.items():
            if name.startswith(f"{stage}__"):
                metric.reset()
        self.stage_counts[stage].reset()
        if self.image_metrics:
            self.psnr[stage].reset()
        if self.is_images and self.image_metrics:
            self.ssim[stage].reset()

    def update_extras(self, stage: str, extras: dict[str, torch.Tensor], x: torch.Tensor) -> None:
        """Handle the non-scalar per-sample outputs (keys starting with ``_``); none by default."""

    def summary_extras(self) -> dict[str, Any]:
        """Model-specific facts for ``metrics.json`` (e.g. a VAE's KL per dimension)."""
        return {}

    def _evaluation_step(self, batch: dict, stage: str) -> dict[str, torch.Tensor]:
        x = batch["image"]
        metrics, _, x_hat = self.per_sample_metrics(x, self._eval_generator)
        extras = {k: metrics.pop(k) for k in list(metrics) if k.startswith("_")}
        if extras:
            self.update_extras(stage, extras, x)
        for key, metric in self._means(stage, metrics).items():
            metric.update(metrics[key])
            self._log_metric(f"{stage}/{key}", metric, prog_bar=key == self.objective_key)
            if stage == "val" and f"val__{key}__sq" in self.stage_means:
                self.stage_means[f"val__{key}__sq"].update(metrics[key].double().pow(2))
        self.stage_counts[stage].update(torch.tensor(float(x.shape[0]), device=self.device))
        if not self.image_metrics:  # real values: no peak signal to speak of
            return metrics
        x_hat = self.in_range(x_hat)
        self.psnr[stage].update(x_hat, x)
        self._log_metric(f"{stage}/psnr", self.psnr[stage])
        if self.is_images and (stage == "test" or self.val_ssim):
            self.ssim[stage].update(x_hat, x)
            self._log_metric(f"{stage}/ssim", self.ssim[stage])
        return metrics

    def _log_metric(self, name: str, metric: Metric, prog_bar: bool = False) -> None:
        """Log an evaluation metric object once per epoch, at its first update: Lightning keeps the object,
        computes it when the epoch's values are read (callbacks' ``on_*_epoch_end`` see this epoch's) and resets
        it after the epoch; logging it again every batch would only repeat that bookkeeping (~0.5 ms a call)."""
        if metric.update_count == 1:
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=prog_bar)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    @torch.no_grad()
    def evaluate_batches(
        self, batches: Iterable[dict], seed: int | None = None, spread: bool = False
    ) -> dict[str, float]:
        """Mean per-sample metrics over float ``batches`` in eval mode, corrupting with a fixed seed.

        Used for the overfitting gap: the training images are measured exactly
        like the validation images are. ``spread=True`` adds ``<key>__var`` (the
        variance over images) and ``__n`` (how many images).
        """
        was_training = self.training
        self.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.eval_seed if seed is None else seed)
        try:
            values = map_batches(
                batches,
                lambda b: {
                    k: v for k, v in self.per_sample_metrics(b["image"], generator)[0].items() if not k.startswith("_")
                },
            )
        finally:
            self.train(was_training)
        out = {key: float(v.double().mean()) for key, v in values.items()}
        if spread and values:
            out.update(
                {
                    f"{key}__var": float(v.double().var(unbiased=True)) if v.numel() > 1 else 0.0
                    for key, v in values.items()
                }
            )
            out["__n"] = float(next(iter(values.values())).numel())
        return out

    def configure_optimizers(self):
        factory = self.optimizer_factory or (lambda params: torch.optim.Adam(params, lr=1e-3))
        optimizer = factory(params=self.parameters()) if self.optimizer_factory else factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)  # a ReduceLROnPlateau monitors scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
