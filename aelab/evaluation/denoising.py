"""Denoising: PSNR and SSIM of reconstructions of corrupted test images, against the clean ones.

For each corruption level, the reconstruction of the corrupted image is
compared with the clean image, next to the corrupted image itself compared
with the clean one — the baseline any denoiser must beat. PSNR is the mean of
per-image PSNRs; both metrics come from torchmetrics with data range 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aelab.analysis.images import image_grid, save_png
from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.data.noise import make_corruption
from aelab.errors import ConfigError
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo

DEFAULT_LEVELS = (
    {"kind": "gaussian", "sigma": 0.1, "clip": True},
    {"kind": "gaussian", "sigma": 0.2, "clip": True},
    {"kind": "gaussian", "sigma": 0.3, "clip": True},
    {"kind": "gaussian", "sigma": 0.5, "clip": True},
    {"kind": "salt_pepper", "p": 0.1},
    {"kind": "masking", "p": 0.25},
)


def level_name(level: dict) -> str:
    """A short name such as ``gaussian_0.3`` or ``masking_0.25``."""
    kind = level["kind"]
    value = level.get("sigma", level.get("p"))
    return f"{kind}_{value:g}" if value is not None else kind


def level_caption(name: str) -> str:
    """A level name made by :func:`level_name` (``gaussian_0.5``) as a reader's caption (``Gaussian noise σ=0.5``)."""
    kind, _, value = name.rpartition("_")
    try:
        corruption = make_corruption(kind, **{"sigma" if kind == "gaussian" else "p": float(value)})
    except (ConfigError, TypeError, ValueError):
        return name
    return corruption.caption()


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(preds, target, data_range=1.0, dim=tuple(range(1, target.dim())), reduction="none")


def ssim_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    k = min(11, target.shape[-1], target.shape[-2])
    k = k if k % 2 else k - 1
    return structural_similarity_index_measure(preds, target, data_range=1.0, kernel_size=k, reduction="none")


class DenoiseTask(EvalTask):
    """PSNR/SSIM of denoised vs corrupted test images at each corruption level, and a grid per level.

    Args:
        levels: corruptions of the clean test images, e.g. ``{kind: gaussian, sigma: 0.1, clip: true}``
            (``kind`` is a corruption's name: gaussian, salt_pepper, masking, ...).
        num_images: test images per level (null: all).
        grid_images: columns of the clean | corrupted | denoised grid per level.
        seed: of the corruptions.
    """

    name = "denoise"
    needs = ("unit_range",)  # PSNR/SSIM with data range 1: values in [0, 1]

    def __init__(
        self,
        levels: list[dict[str, Any]] = DEFAULT_LEVELS,
        num_images: PositiveInt | None = 2000,
        grid_images: PositiveInt = 8,
        seed: int = 0,
    ):
        check_arguments(DenoiseTask, locals(), "eval.denoise")
        self.levels = [dict(level) for level in levels]
        if not self.levels:
            raise ConfigError("eval.denoise.levels is empty: list corruptions such as {kind: gaussian, sigma: 0.1}")
        self.corruptions = {
            level_name(lv): make_corruption(lv["kind"], **{k: v for k, v in lv.items() if k != "kind"})
            for lv in self.levels
        }
        self.num_images, self.grid_images, self.seed = num_images, int(grid_images), int(seed)

    def metric_info(self) -> list[MetricInfo]:
        infos = [
            MetricInfo("eval/denoise_psnr", "mean PSNR of denoised test images (dB)", True, None, True),
            MetricInfo("eval/denoise_psnr_gain", "PSNR gain over the noisy input (dB)", True, None, True),
        ]
        for name, corruption in self.corruptions.items():  # per level: the noisy input is the denoised one's baseline
            for key, unit in (("psnr", " (dB)"), ("ssim", "")):
                what = f"{key.upper()}{unit}, {corruption.caption()}"
                infos.append(MetricInfo(f"eval/denoise/{name}/{key}", f"denoised {what}", True))
                infos.append(
                    MetricInfo(
                        f"eval/denoise/{name}/{key}_input",
                        f"noisy input {what}",
                        True,
                        baseline_for=f"eval/denoise/{name}/{key}",
                    )
                )
        return infos

    def run(self, run, out_dir: Path) -> EvalResult:
        model = run.model
        results: dict[str, float] = {}
        table, files = [], {}
        images = run.data.is_images
        for i, (name, corruption) in enumerate(self.corruptions.items()):
            corruption = corruption.to(model.device)
            generator = torch.Generator(device=model.device).manual_seed(self.seed + i)

            def measure(batch, corruption=corruption, generator=generator):
                x = batch["image"]
                noisy = corruption(x, generator)
                denoised = model.in_range(model.reconstruct(noisy))
                out = {"psnr": psnr_per_image(denoised, x), "psnr_input": psnr_per_image(noisy, x)}
                if images:  # SSIM is a measure of images; vectors get PSNR only
                    out.update(ssim=ssim_per_image(denoised, x), ssim_input=ssim_per_image(noisy, x))
                return out

            values = map_batches(
                run.data.batches("test", limit=self.num_images, device=model.device), measure, self.num_images
            )
            row = {k: float(v.mean()) for k, v in values.items()}
            for key, value in row.items():
                results[f"eval/denoise/{name}/{key}"] = value
            table.append({"level": name, **row})
            if images:
                x = run.data.images("test", limit=self.grid_images, device=model.device)
                noisy = corruption(x, torch.Generator(device=model.device).manual_seed(self.seed + i))
                with torch.no_grad():
                    files[name] = save_png(
                        image_grid(
                            [x, noisy, model.reconstruct(noisy)],
                            row_labels=["clean test images", corruption.caption(), "denoised by the model"],
                            title=f"Denoising: {corruption.caption()}",
                        ),
                        out_dir / f"denoise_{name}.png",
                    )
        results["eval/denoise_psnr_gain"] = sum(r["psnr"] - r["psnr_input"] for r in table) / len(table)
        results["eval/denoise_psnr"] = sum(r["psnr"] for r in table) / len(table)
        return EvalResult(results, {"levels": table}, files)
