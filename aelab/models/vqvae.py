"""VQ-VAE (van den Oord et al. 2017, *Neural Discrete Representation Learning*): the autoencoder with a
vector-quantised code.

The encoder writes a code vector of ``bottleneck`` numbers (the knob every autoencoder shares), read as
``bottleneck / code_dim`` slots of ``code_dim`` numbers; each slot is replaced by its nearest entry of a
codebook of ``codebook_size`` vectors, and the decoder reads the quantised vector. Gradients pass the
quantisation straight through; the loss is the reconstruction error plus ``commitment · ‖z_e − sg(e)‖²``
(β = 0.25 in the paper). The codebook is learned by exponential moving averages of the assigned
encoder outputs (the paper's appendix; Razavi et al. 2019), not by gradients; an entry that no code
has chosen for ``dead_code_steps`` training steps is restarted at a random encoder output of the
current batch (the usual remedy for codebook collapse, where one entry follows the moving encoder outputs alone). Across
DDP ranks the usage counts and sums are all-reduced and restarts
are broadcast from rank 0, so every rank keeps the same codebook.

Logged: ``train/perplexity`` (of the batch's code choices), ``val/perplexity`` and ``val/codebook_usage``
(distinct entries chosen over the whole validation set), ``train/commitment``.

Sampling (generation grids, ``eval=[generation]``): each slot's entry is drawn from that slot's empirical
distribution over the training codes, slots independently — a fitted prior over codes, simpler than the
paper's autoregressive PixelCNN prior, so samples mix parts that never co-occurred.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aelab.config.constraints import NonNegativeFloat, NonNegativeInt, PositiveInt, Range
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.errors import ConfigError
from aelab.metric_info import MetricInfo, stage_metrics
from aelab.models.autoencoder import Autoencoder
from aelab.models.vae import VectorMean


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """``exp(entropy)`` of the code frequencies ``counts`` (1 = one entry used, K = all used evenly)."""
    p = counts.double() / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).float()


class VectorQuantizer(nn.Module):
    """A codebook of ``size`` vectors of ``dim`` numbers, learned by EMA (a plain ``nn.Module``).

    ``forward(z_e)`` with ``z_e`` of shape ``[..., dim]`` returns ``(z_q, indices, commitment)``: the
    quantised vectors (straight-through: gradients flow to ``z_e``), the chosen entries, and
    ``mean ‖z_e − sg(z_q)‖²``. :meth:`update` moves the codebook towards the encoder outputs (training only).
    """

    def __init__(self, size: int, dim: int, decay: float = 0.99, eps: float = 1e-5, dead_code_steps: int = 20):
        super().__init__()
        self.size, self.dim, self.decay, self.eps = int(size), int(dim), float(decay), float(eps)
        self.dead_code_steps = int(dead_code_steps)
        self.register_buffer("embedding", torch.randn(self.size, self.dim))
        self.register_buffer("cluster_size", torch.ones(self.size))
        self.register_buffer("embed_sum", self.embedding.clone())
        self.register_buffer("steps_unused", torch.zeros(self.size, dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def assign(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry of each row of ``flat`` ``[n, dim]``."""
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embedding.T + self.embedding.pow(2).sum(1)[None]
        return distances.argmin(1)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = z_e.reshape(-1, self.dim)
        indices = self.assign(flat.detach())
        quantised = F.embedding(indices, self.embedding).view_as(z_e)
        commitment = (z_e - quantised.detach()).pow(2).mean()
        z_q = z_e + (quantised - z_e).detach()
        return z_q, indices.view(z_e.shape[:-1]), commitment

    @torch.no_grad()
    def update(self, z_e: torch.Tensor, indices: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """One EMA step of the codebook towards the outputs ``z_e`` assigned to each entry; restart dead entries.

        Without a read back to the host: the first batch, the restarts and ``valid`` (a step whose loss is not
        finite changes nothing) are masks on the device. Across DDP ranks one all-reduce carries the counts,
        the sums and rank 0's restart candidates, so every rank keeps the same codebook.
        """
        with torch.autocast(z_e.device.type, enabled=False):  # the codebook's sums in float32 under mixed precision
            self._update(z_e.detach().reshape(-1, self.dim).float(), indices.reshape(-1), valid)

    def _update(self, flat: torch.Tensor, indices: torch.Tensor, valid: torch.Tensor | None) -> None:
        one_hot = F.one_hot(indices, self.size).float()
        pick = torch.randint(len(flat), (self.size,), device=flat.device)
        candidates = flat[pick] + 1e-3 * torch.randn(self.size, self.dim, device=flat.device)  # restart values
        if _distributed():
            candidates = candidates * float(dist.get_rank() == 0)  # rank 0's candidates, summed with zeros
        packed = _all_reduce(torch.cat([one_hot.sum(0)[:, None], one_hot.T @ flat, candidates], dim=1))
        counts, sums, candidates = packed[:, 0], packed[:, 1 : 1 + self.dim], packed[:, 1 + self.dim :]
        ok = torch.ones((), dtype=torch.bool, device=flat.device) if valid is None else valid.reshape(())
        first = ~self.initialized  # the first batch: entries start at random encoder outputs
        cluster_size = self.cluster_size * self.decay + counts * (1 - self.decay)
        embed_sum = self.embed_sum * self.decay + sums * (1 - self.decay)
        n = cluster_size.sum()
        smoothed = (cluster_size + self.eps) / (n + self.size * self.eps) * n  # Laplace smoothing
        embedding = embed_sum / smoothed[:, None]
        steps_unused = (self.steps_unused + 1) * (counts == 0)
        dead = (steps_unused >= max(1, self.dead_code_steps)) & (self.dead_code_steps > 0) & ~first
        usage = counts.sum() / self.size  # a restarted entry starts with the average usage
        embedding = torch.where(dead[:, None], candidates, embedding)
        cluster_size = torch.where(dead, usage, cluster_size)
        embed_sum = torch.where(dead[:, None], candidates * usage, embed_sum)
        steps_unused = torch.where(dead, 0, steps_unused)
        embedding = torch.where(first, candidates, embedding)
        embed_sum = torch.where(first, candidates, embed_sum)
        cluster_size = torch.where(first, self.cluster_size, cluster_size)
        steps_unused = torch.where(first, self.steps_unused, steps_unused)
        for buffer, value in (
            (self.embedding, embedding),
            (self.embed_sum, embed_sum),
            (self.cluster_size, cluster_size),
            (self.steps_unused, steps_unused),
        ):
            buffer.copy_(torch.where(ok, value, buffer))
        self.restarts.add_((dead & ok).sum())
        self.initialized.logical_or_(ok)


class VQVAE(Autoencoder):
    """VQ-VAE: the autoencoder with the code quantised by an EMA codebook (see the module docstring).

    Args:
        codebook_size: entries K of the codebook (shared by all slots).
        code_dim: numbers per slot (the codebook vectors' size); must divide ``bottleneck``.
        commitment: β of the commitment loss.
        ema_decay: decay of the codebook's moving averages.
        dead_code_steps: steps without being chosen after which an entry is restarted (0 = never).
        **kwargs: the options of :class:`~aelab.models.Autoencoder` (nets, loss, noise, ...).
    """

    # checked by the config check before anything is built (every job of a sweep too), and by check_arguments below
    option_rules = (
        (
            "bottleneck % code_dim == 0",
            "{path}.code_dim={code_dim} must divide {path}.bottleneck={bottleneck} "
            "(the code vector is read as bottleneck / code_dim slots)",
        ),
    )

    def __init__(
        self,
        codebook_size: Annotated[int, Range(ge=2, what="a codebook size")] = 512,
        code_dim: PositiveInt = 4,
        commitment: NonNegativeFloat = 0.25,
        ema_decay: Annotated[float, Range(ge=0, lt=1, what="a decay")] = 0.99,
        dead_code_steps: NonNegativeInt = 20,
        **kwargs,
    ):
        check_arguments(VQVAE, locals(), "model")
        super().__init__(**kwargs)
        if getattr(self.decoder, "uses_indices", False):
            raise ConfigError("a VQ-VAE decodes quantised codes: max-unpooling decoders do not apply")
        for name in ("sparsity", "contraction", "mmd"):
            if getattr(self, name) is not None:
                raise ConfigError(
                    f"model.{ {'sparsity': 'sparse', 'contraction': 'contractive'}.get(name, name) } "
                    "does not apply to a VQ-VAE (its code is quantised)"
                )
        self.code_dim, self.codebook_size, self.commitment = int(code_dim), int(codebook_size), float(commitment)
        self.slots = self.bottleneck // self.code_dim
        self.quantizer = VectorQuantizer(self.codebook_size, self.code_dim, ema_decay, dead_code_steps=dead_code_steps)
        # how often each entry is chosen over an evaluation: the mean per-batch count (perplexity and usage ignore the
        # scale)
        self.code_counts = nn.ModuleDict({s: VectorMean(self.codebook_size) for s in ("val", "test")})
        self.sampling = "codes drawn slot by slot from the training codes' entry frequencies (slots independent)"

    # ------------------------------------------------------------- the net
    def code(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``z``: the quantised code vector (the codebook entries of the slots, concatenated); ``z_e``: the
        encoder's output; ``indices``: the chosen entries ``[B, slots]``; ``commitment``: ``mean ‖z_e − sg(z_q)‖²``."""
        z_e = self.encoder(x)
        z_q, indices, commitment = self.quantizer(z_e.view(-1, self.slots, self.code_dim))
        return {"z": z_q.reshape(z_e.shape), "z_e": z_e, "indices": indices, "commitment": commitment}

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The chosen codebook entries ``[B, slots]`` (integers)."""
        return self.code(x)["indices"]

    # ------------------------------------------------------------ training
    def objective(self, x: torch.Tensor, x_in: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction loss plus ``commitment`` × the commitment loss; moves the codebook one EMA step
        towards this batch's encoder outputs (not when the loss is non-finite)."""
        out = self(x_in)
        recon = self._recon_loss(out["out"], x)
        loss = recon + self.commitment * out["commitment"]
        self.quantizer.update(
            out["z_e"].view(-1, self.slots, self.code_dim), out["indices"], valid=torch.isfinite(loss)
        )
        values = {"recon_loss": recon, "loss": loss, "commitment": out["commitment"]}
        if self.logging_step:
            counts = torch.bincount(out["indices"].reshape(-1), minlength=self.codebook_size)
            values.update(perplexity=perplexity(counts), codebook_restarts=self.quantizer.restarts.float())
        return loss, values

    def per_sample_metrics(self, x: torch.Tensor, generator: torch.Generator | None):
        x_in = self.noise(x, generator)
        out = self(x_in)
        x_hat = self._activate(out["out"])
        metrics = {"recon_loss": self._recon_loss(out["out"], x, reduce=False), "_codes": out["indices"]}
        if self.loss_name != "mse":
            metrics["mse"] = (x_hat - x).pow(2).flatten(1).mean(1)
        return metrics, x_in, x_hat

    def update_extras(self, stage: str, extras: dict[str, torch.Tensor], x: torch.Tensor) -> None:
        self.code_counts[stage].update(torch.bincount(extras["_codes"].reshape(-1), minlength=self.codebook_size)[None])

    def _log_usage(self, stage: str) -> None:
        counts = self.code_counts[stage].compute()  # synced over DDP ranks by torchmetrics
        self.code_counts[stage].reset()
        if counts.sum() > 0:
            self.log(f"{stage}/perplexity", perplexity(counts), sync_dist=False)
            self.log(f"{stage}/codebook_usage", float((counts > 0).sum()), sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_usage("val")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_usage("test")

    def metric_info(self) -> list[MetricInfo]:
        infos = super().metric_info()
        infos += stage_metrics("perplexity", "codebook perplexity", True, columns=("test",), summary_stage=None)
        infos += [
            MetricInfo("val/codebook_usage", "codebook entries used", True, "max", True),
            MetricInfo("test/codebook_usage", "codebook entries used", True, None, True),
            MetricInfo("train/commitment", "commitment loss", False),
            MetricInfo("train/loss", "training objective", False),
            MetricInfo("train/codebook_restarts", "dead codebook entries restarted", None),
        ]
        return infos

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batches: Iterable[dict] | None = None) -> torch.Tensor:
        """``n`` images from codes drawn slot by slot from the training codes' entry frequencies."""
        if batches is None:
            raise ValueError("a VQ-VAE samples its codes from the training codes' frequencies: pass batches")
        codes = map_batches(batches, lambda b: {"c": self.codes(b["image"])})["c"]  # [N, slots]
        counts = torch.stack(
            [torch.bincount(codes[:, s], minlength=self.codebook_size) for s in range(self.slots)]
        ).double()
        generator = torch.Generator().manual_seed(seed)
        picks = torch.multinomial(counts, n, replacement=True, generator=generator).T  # [n, slots]
        z = self.quantizer.embedding.cpu()[picks].reshape(n, self.bottleneck)
        return self.decode(z.to(self.device)).cpu()

    def summary_extras(self) -> dict:
        return {
            "codebook": {
                "size": self.codebook_size,
                "code_dim": self.code_dim,
                "slots": self.slots,
                "restarts": int(self.quantizer.restarts),
            }
        }
