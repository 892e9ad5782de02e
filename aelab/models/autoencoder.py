"""The deterministic autoencoder, with every variant as an option of it.

* plain: ``noise=none``, no penalty;
* denoising: any corruption from the ``noise`` group (the target stays clean);
* sparse: a :class:`~aelab.models.penalties.SparsityPenalty` (``model=sparse``);
* contractive: a :class:`~aelab.models.penalties.ContractivePenalty` (``model=contractive``);
* linear: MLP nets without hidden layers and ``output_activation=identity``.

The nets are passed in as factories ``encoder(input_shape=..., bottleneck=...)``
and ``decoder(output_shape=..., bottleneck=...)`` (Hydra partials in the
configs, or the classes of ``aelab.nets`` in a notebook) or as ready modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.config.constraints import Bottleneck
from aelab.config.signatures import check_arguments
from aelab.data.noise import Corruption
from aelab.errors import ConfigError
from aelab.metric_info import MetricInfo, stage_metrics
from aelab.models.base import ReconstructionModule
from aelab.models.penalties import ContractivePenalty, MMDPenalty, SparsityPenalty
from aelab.nets import MLPDecoder, MLPEncoder

NetFactory = Callable[..., nn.Module]


def build_nets(
    encoder: NetFactory | nn.Module | None,
    decoder: NetFactory | nn.Module | None,
    input_shape: tuple[int, int, int],
    code_size: int,
    encoder_outputs: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Instantiate encoder and decoder factories for images of ``input_shape``.

    The decoder reads codes of ``code_size``; the encoder writes
    ``encoder_outputs`` numbers (default: ``code_size``; a VAE asks for two per latent).
    """
    enc_size = code_size if encoder_outputs is None else encoder_outputs
    enc = (
        encoder
        if isinstance(encoder, nn.Module)
        else (encoder or MLPEncoder)(input_shape=input_shape, bottleneck=enc_size)
    )
    dec = (
        decoder
        if isinstance(decoder, nn.Module)
        else (decoder or MLPDecoder)(output_shape=input_shape, bottleneck=code_size)
    )
    if getattr(dec, "uses_indices", False) and getattr(enc, "downsample", None) != "pool":
        raise ConfigError(
            "model.decoder.upsample=unpool needs the encoder's max-pooling indices: use model=conv_pool "
            "(or model.encoder.downsample=pool) with it"
        )
    if getattr(dec, "uses_indices", False) and len(getattr(enc, "channels", [])) != len(getattr(dec, "channels", [])):
        raise ConfigError("max-unpooling needs as many decoder stages as encoder stages (same channels list)")
    return enc, dec


class Autoencoder(ReconstructionModule):
    """A deterministic autoencoder; denoising, sparse and contractive are its options.

    Args:
        input_shape: ``(channels, height, width)`` of the images (from the DataModule).
        bottleneck: code size — the one knob shared by every variant.
        encoder, decoder: net factories (or modules), see the module docstring.
        loss: ``mse`` (per-pixel mean squared error, default) or ``bce``.
        output_activation: ``sigmoid`` (pixels in [0, 1]) or ``identity`` (linear AE; real-valued data need it).
        noise: corruption applied to training inputs (and, with a fixed seed, to val/test).
        sparse: ``None`` or a :class:`SparsityPenalty` on the code.
        contractive: ``None`` or a :class:`ContractivePenalty` on the encoder.
        mmd: ``None`` or an :class:`MMDPenalty` pulling the codes' distribution to ``N(0, I)`` (the Wasserstein
            autoencoder, WAE-MMD); such a model samples from that prior.
        optimizer, scheduler: partials taking ``params`` / ``optimizer`` (Adam 1e-3 if None).
        monitor, monitor_mode: the validation metric that selects the best checkpoint.
        value_range: the data's values, ``unit`` ([0, 1]) or ``real`` (given by the DataModule, as ``input_shape``).
    """

    # checked by the config check (with the data's value range) before anything is built, and by check_arguments
    option_rules = (
        (
            "value_range != 'real' or output_activation == 'identity'",
            "{path}.output_activation={output_activation} keeps reconstructions in [0, 1] and cannot fit "
            "real-valued data: use {path}.output_activation=identity",
        ),
        (
            "value_range != 'real' or loss != 'bce'",
            "{path}.loss=bce needs targets in [0, 1] and cannot fit real-valued data: use {path}.loss=mse",
        ),
    )

    def __init__(
        self,
        input_shape: Sequence[int],
        bottleneck: Bottleneck = 32,
        encoder: NetFactory | nn.Module | None = None,
        decoder: NetFactory | nn.Module | None = None,
        loss: Literal["mse", "bce"] = "mse",
        output_activation: Literal["sigmoid", "identity"] = "sigmoid",
        noise: Corruption | None = None,
        sparse: SparsityPenalty | None = None,
        contractive: ContractivePenalty | None = None,
        mmd: MMDPenalty | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/recon_loss",
        monitor_mode: Literal["min", "max"] = "min",
        eval_seed: int = 12345,
        val_ssim: bool = False,
        value_range: Literal["unit", "real"] = "unit",
    ):
        check_arguments(Autoencoder, locals(), "model")
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
        if loss == "bce" and output_activation != "sigmoid":
            raise ConfigError("model.loss=bce needs model.output_activation=sigmoid (outputs must be probabilities)")
        self.save_hyperparameters(
            ignore=["encoder", "decoder", "noise", "optimizer", "scheduler", "sparse", "contractive", "mmd"],
            logger=False,
        )
        self.encoder, self.decoder = build_nets(encoder, decoder, self.input_shape, bottleneck)
        self.loss_name = loss
        self.recon_label = "reconstruction MSE" if loss == "mse" else "reconstruction BCE"
        self.output_activation = output_activation
        self.sparsity = sparse
        if (
            self.sparsity is not None
            and self.sparsity.kind == "kl"
            and getattr(self.encoder, "code_activation_name", None) != "sigmoid"
        ):
            raise ConfigError(
                "model.sparse.kind=kl compares mean activations with a target in (0, 1): "
                "set model.encoder.code_activation=sigmoid"
            )
        self.contraction = contractive
        self.mmd = mmd
        if mmd is not None:
            self.sampling = "samples from the prior N(0, I) the MMD penalty matches the codes to"
        keys = ["recon_loss"] + (["mse"] if loss != "mse" else [])
        self.register_metric_keys(keys)

    def metric_info(self) -> list[MetricInfo]:
        infos = super().metric_info()
        if self.loss_name != "mse":
            infos += stage_metrics("mse", "pixel MSE", False, stages=("val", "test"), summary_stage=None)
        if self.sparsity is not None:
            infos.append(MetricInfo("train/sparse_penalty", "sparsity penalty", False))
        if self.contraction is not None:
            infos.append(MetricInfo("train/contractive_penalty", "contractive penalty", False))
        if self.mmd is not None:
            infos.append(MetricInfo("train/mmd_penalty", "MMD penalty (weight × MMD²)", False))
        if self.sparsity is not None or self.contraction is not None or self.mmd is not None:
            infos.append(MetricInfo("train/loss", "training objective", False))
        return infos

    # ------------------------------------------------------------- the net
    def _activate(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out

    def code(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"z": the encoder's code}`` (and the max-pooling switches a max-unpooling decoder reads)."""
        if getattr(self.decoder, "uses_indices", False):
            z, indices = self.encoder.forward_with_indices(x)
            return {"z": z, "pool_indices": indices}
        return {"z": self.encoder(x)}

    def decoder_output(self, code: dict[str, torch.Tensor]) -> torch.Tensor:
        if "pool_indices" in code:
            return self.decoder(code["z"], code["pool_indices"])
        return self.decoder(code["z"])

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        return self._activate(out)

    def _recon_loss(self, out: torch.Tensor, x: torch.Tensor, reduce: bool = True) -> torch.Tensor:
        if self.loss_name == "bce":
            per = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            per = (self._activate(out) - x).pow(2)
        per_image = per.flatten(1).mean(1)
        return per_image.mean() if reduce else per_image

    # ------------------------------------------------------------ training
    def objective(self, x: torch.Tensor, x_in: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reconstruction loss of ``x`` from ``x_in``, plus the configured penalties on the code."""
        if self.contraction is not None:
            x_in = x_in.detach().requires_grad_(True)
        out = self(x_in)
        z = out["z"]
        recon = self._recon_loss(out["out"], x)
        loss, values = recon, {"recon_loss": recon}
        for name, penalty in (("sparse", self.sparsity), ("contractive", self.contraction), ("mmd", self.mmd)):
            if penalty is not None:
                values[f"{name}_penalty"] = term = penalty(x_in, z) if name == "contractive" else penalty(z)
                loss = loss + term
        if loss is not recon:
            values["loss"] = loss
        return loss, values

    def per_sample_metrics(self, x: torch.Tensor, generator: torch.Generator | None):
        x_in = self.noise(x, generator)
        out = self(x_in)["out"]
        metrics = {"recon_loss": self._recon_loss(out, x, reduce=False)}
        x_hat = self._activate(out)
        if self.loss_name != "mse":
            metrics["mse"] = (x_hat - x).pow(2).flatten(1).mean(1)
        return metrics, x_in, x_hat

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batches=None) -> torch.Tensor:
        """With an MMD penalty (WAE), ``n`` images decoded from the prior ``N(0, I)``; otherwise from a Gaussian
        fitted to the training codes (see :meth:`ReconstructionModule.sample`)."""
        if self.mmd is None:
            return super().sample(n, seed, batches)
        z = torch.randn(n, self.bottleneck, generator=torch.Generator().manual_seed(seed))
        return self.decode(z.to(self.device)).cpu()
