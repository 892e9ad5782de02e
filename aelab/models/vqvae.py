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


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
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
    def update(self, z_e: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step of the codebook towards the outputs ``z_e`` assigned to each entry; restart dead entries."""
        flat = z_e.detach().reshape(-1, self.dim).float()
        idx = indices.reshape(-1)
        if not bool(self.initialized):  # first batch: entries start at random encoder outputs
            self._restart(torch.arange(self.size, device=flat.device), flat)
            self.initialized.fill_(True)
            self.embed_sum.copy_(self.embedding)
            return
        one_hot = F.one_hot(idx, self.size).float()
        counts = _all_reduce(one_hot.sum(0))
        sums = _all_reduce(one_hot.T @ flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n  # Laplace smoothing
        self.embedding.copy_(self.embed_sum / smoothed[:, None])
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        if self.dead_code_steps <= 0:
            return
        dead = (self.steps_unused >= self.dead_code_steps).nonzero().flatten()
        if len(dead):
            self._restart(dead, flat)
            usage = counts.sum() / self.size  # a restarted entry starts with the average usage
            self.cluster_size[dead] = usage
            self.embed_sum[dead] = self.embedding[dead] * usage
            self.steps_unused[dead] = 0
            self.restarts += len(dead)

    def _restart(self, entries: torch.Tensor, flat: torch.Tensor) -> None:
        pick = torch.randint(len(flat), (len(entries),), device=flat.device)
        self.embedding[entries] = flat[pick] + 1e-3 * torch.randn(len(entries), self.dim, device=flat.device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(self.embedding, 0)


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
        if self.bottleneck % int(code_dim):
            raise ConfigError(
                f"model.code_dim={code_dim} must divide model.bottleneck={self.bottleneck} "
                "(the code vector is read as bottleneck / code_dim slots)"
            )
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
    def quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_e, z_q, indices [B, slots], commitment)`` of images ``x``."""
        z_e = self.encoder(x)
        z_q, indices, commitment = self.quantizer(z_e.view(-1, self.slots, self.code_dim))
        return z_e, z_q.reshape(z_e.shape), indices, commitment

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, z_q, _, _ = self.quantise(x)
        return z_q, self.decoder(z_q)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised code vector (codebook entries of the slots, concatenated)."""
        return self.quantise(x)[1]

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The chosen codebook entries ``[B, slots]`` (integers)."""
        return self.quantise(x)[2]

    # ------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["image"]
        x_in = self.noise(x)
        z_e, z_q, indices, commitment = self.quantise(x_in)
        out = self.decoder(z_q)
        recon = self._recon_loss(out, x)
        loss = recon + self.commitment * commitment
        if not self.check_finite(loss):
            return None
        self.quantizer.update(z_e.view(-1, self.slots, self.code_dim), indices)
        n = x.shape[0]
        if self._step_log_due():
            counts = torch.bincount(indices.reshape(-1), minlength=self.codebook_size)
            self.log_step(
                {
                    "train/recon_loss": recon,
                    "train/loss": loss,
                    "train/commitment": commitment,
                    "train/perplexity": perplexity(counts),
                    "train/codebook_restarts": self.quantizer.restarts.float(),
                },
                n,
                prog_bar="train/recon_loss",
            )
        self.accumulate_epoch({"train/recon_loss_epoch": recon}, n)
        return loss

    def per_sample_metrics(self, x: torch.Tensor, generator: torch.Generator | None):
        x_in = self.noise(x, generator)
        _, z_q, indices, _ = self.quantise(x_in)
        out = self.decoder(z_q)
        x_hat = self._activate(out)
        metrics = {"recon_loss": self._recon_loss(out, x, reduce=False), "_codes": indices}
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
