"""Generation from autoencoders: samples, latent interpolations and latent traversals.

* VAEs sample from their prior N(0, I).
* Deterministic autoencoders have no prior; they sample codes from a Gaussian
  fitted (mean and full covariance) to the codes of training images.
* Interpolations decode straight lines between the (mean) codes of two test images.
* Traversals (VAEs) vary one latent dimension at a time around a test image's
  code, one row per dimension, the dimensions sorted by their KL (most used first).
"""

from __future__ import annotations

from typing import Iterable

import torch

from aelab.data.datamodule import to_float_batch


@torch.no_grad()
def encode_loader(model, loader: Iterable[dict], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (mean codes for VAEs) and labels of the images in ``loader``, on the CPU."""
    codes, labels, seen = [], [], 0
    for batch in loader:
        batch = to_float_batch({k: v.to(model.device) for k, v in batch.items()})
        codes.append(model.encode(batch["image"]).float().cpu())
        labels.append(batch["label"].cpu())
        seen += batch["image"].shape[0]
        if limit is not None and seen >= limit:
            break
    z, y = torch.cat(codes), torch.cat(labels)
    return (z[:limit], y[:limit]) if limit is not None else (z, y)


@torch.no_grad()
def fitted_gaussian_samples(model, train_codes: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Decode ``n`` codes drawn from a Gaussian fitted to ``train_codes`` (deterministic AEs)."""
    mean = train_codes.mean(0)
    centred = train_codes - mean
    cov = centred.T @ centred / max(1, train_codes.shape[0] - 1)
    cov = cov + 1e-5 * torch.eye(cov.shape[0]) * cov.diagonal().mean().clamp(min=1e-8)
    dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    torch.manual_seed(seed)
    z = dist.sample((n,))
    return model.decode(z.to(model.device)).cpu()


@torch.no_grad()
def prior_samples(model, n: int, seed: int = 0) -> torch.Tensor:
    """Decode ``n`` samples from a VAE's prior."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    return model.sample_prior(n, generator).cpu()


@torch.no_grad()
def interpolation_rows(model, starts: torch.Tensor, ends: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Rows ``[start, decode((1-t)·z_a + t·z_b) for t in [0, 1], end]`` as one image batch."""
    za, zb = model.encode(starts.to(model.device)), model.encode(ends.to(model.device))
    t = torch.linspace(0, 1, steps, device=model.device)[None, :, None]
    z = (1 - t) * za[:, None] + t * zb[:, None]  # [pairs, steps, D]
    decoded = model.decode(z.reshape(-1, z.shape[-1])).reshape(za.shape[0], steps, *starts.shape[1:]).cpu()
    rows = torch.cat([starts.cpu()[:, None], decoded, ends.cpu()[:, None]], dim=1)
    return rows.reshape(-1, *starts.shape[1:])


@torch.no_grad()
def traversal_rows(model, image: torch.Tensor, dims: list[int], span: float = 3.0, steps: int = 9) -> torch.Tensor:
    """For each latent dimension in ``dims``: vary it over ``[-span, span]`` around ``image``'s code."""
    base = model.encode(image[None].to(model.device))[0]
    values = torch.linspace(-span, span, steps, device=model.device)
    rows = []
    for d in dims:
        z = base.repeat(steps, 1)
        z[:, d] = values
        rows.append(model.decode(z).cpu())
    return torch.cat(rows)
