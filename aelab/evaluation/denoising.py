"""Denoising: PSNR and SSIM of reconstructions of corrupted test images, against the clean ones.

For each corruption level, the reconstruction of the corrupted image is
compared with the clean image, next to the corrupted image itself compared
with the clean one — the baseline any denoiser must beat. PSNR is the mean of
per-image PSNRs; both metrics come from torchmetrics with data range 1.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchvision.utils import make_grid, save_image

from aelab.data.noise import make_corruption
from aelab.errors import ConfigError
from aelab.evaluation.common import map_batches


def level_name(level: dict) -> str:
    """A short name such as ``gaussian_0.3`` or ``masking_0.25``."""
    kind = level["kind"]
    value = level.get("sigma", level.get("p"))
    return f"{kind}_{value:g}" if value is not None else kind


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return peak_signal_noise_ratio(preds, target, data_range=1.0, dim=(1, 2, 3), reduction="none")


def ssim_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    k = min(11, target.shape[-1], target.shape[-2])
    k = k if k % 2 else k - 1
    return structural_similarity_index_measure(preds, target, data_range=1.0, kernel_size=k, reduction="none")


def evaluate_denoising(run, options, out_dir: Path) -> dict:
    """PSNR/SSIM of denoised vs corrupted inputs at each level, and a grid per level."""
    levels = [dict(level) for level in (options.get("levels") or [])]
    if not levels:
        raise ConfigError("denoise.levels is empty: list corruptions such as {kind: gaussian, sigma: 0.1}")
    model = run.model
    results: dict[str, float] = {}
    table, files = [], {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(levels):
        kwargs = {k: v for k, v in level.items() if k != "kind"}
        corruption = make_corruption(level["kind"], **kwargs).to(model.device)
        name = level_name(level)
        generator = torch.Generator(device=model.device).manual_seed(int(options.get("seed", 0)) + i)

        def measure(x, batch, corruption=corruption, generator=generator):
            noisy = corruption(x, generator)
            denoised = model.reconstruct(noisy).clamp(0, 1)
            return {
                "psnr": psnr_per_image(denoised, x), "psnr_input": psnr_per_image(noisy, x),
                "ssim": ssim_per_image(denoised, x), "ssim_input": ssim_per_image(noisy, x),
            }

        values = map_batches(model, run.datamodule.split_dataloader("test", limit=options.get("num_images")), measure, options.get("num_images"))
        row = {k: float(v.mean()) for k, v in values.items()}
        for key, value in row.items():
            results[f"eval/denoise/{name}/{key}"] = value
        table.append({"level": name, **row})
        files[name] = _grid(run, corruption, int(options.get("grid_images", 8)), out_dir / f"denoise_{name}.png", seed=int(options.get("seed", 0)) + i)
    results["eval/denoise_psnr_gain"] = sum(r["psnr"] - r["psnr_input"] for r in table) / len(table)
    results["eval/denoise_psnr"] = sum(r["psnr"] for r in table) / len(table)
    return {"metrics": results, "files": files, "details": {"levels": table}}


@torch.no_grad()
def _grid(run, corruption, n: int, path: Path, seed: int) -> Path:
    from aelab.data.datamodule import to_float_batch

    batch = next(iter(run.datamodule.split_dataloader("test", limit=n)))
    x = to_float_batch(batch)["image"].to(run.model.device)
    noisy = corruption(x, torch.Generator(device=run.model.device).manual_seed(seed))
    denoised = run.model.reconstruct(noisy)
    rows = torch.cat([x, noisy, denoised]).clamp(0, 1).cpu()
    if rows.shape[1] == 1:
        rows = rows.expand(-1, 3, -1, -1)
    save_image(make_grid(rows, nrow=x.shape[0], padding=2, pad_value=0.5), str(path))
    return path
