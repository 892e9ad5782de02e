"""The one loop over batches: apply a function to float batches without gradients and collect its outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


@torch.no_grad()
def map_batches(
    batches: Iterable[dict], fn: Callable[[dict], dict[str, torch.Tensor]], limit: int | None = None
) -> dict[str, torch.Tensor]:
    """Apply ``fn(batch)`` to each batch (``DataModule.batches`` gives float images on the device)
    and concatenate its per-image outputs on the CPU, stopping after ``limit`` images."""
    outputs: dict[str, list[torch.Tensor]] = {}
    seen = 0
    for batch in batches:
        for key, value in fn(batch).items():
            outputs.setdefault(key, []).append(
                value.detach().float().cpu() if value.is_floating_point() else value.detach().cpu()
            )
        seen += batch["image"].shape[0]
        if limit is not None and seen >= limit:
            break
    out = {k: torch.cat(v) for k, v in outputs.items()}
    return {k: v[:limit] for k, v in out.items()} if limit is not None else out
