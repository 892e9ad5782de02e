"""Shared pieces of the evaluations: scoring whole splits in batches, without gradients."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from aelab.data.datamodule import to_float_batch


@torch.no_grad()
def map_batches(model, loader: Iterable[dict], fn: Callable[[torch.Tensor, dict], dict[str, torch.Tensor]],
                limit: int | None = None) -> dict[str, torch.Tensor]:
    """Apply ``fn(images, batch)`` to float batches of ``loader`` and concatenate its outputs (on the CPU)."""
    outputs: dict[str, list[torch.Tensor]] = {}
    seen = 0
    for batch in loader:
        batch = to_float_batch({k: v.to(model.device) for k, v in batch.items()})
        for key, value in fn(batch["image"], batch).items():
            outputs.setdefault(key, []).append(value.detach().float().cpu())
        seen += batch["image"].shape[0]
        if limit is not None and seen >= limit:
            break
    out = {k: torch.cat(v) for k, v in outputs.items()}
    return {k: v[:limit] for k, v in out.items()} if limit is not None else out


def is_vae(model) -> bool:
    """Whether ``model`` is a variational autoencoder (has a prior and an ELBO)."""
    return hasattr(model, "iwae_bound")
