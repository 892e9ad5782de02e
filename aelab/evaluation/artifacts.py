"""Decoder artifacts: a checkerboard score from the 2-D spectrum (after Odena et al. 2016).

Stride-2 upsampling with uneven kernel overlap (a transposed convolution whose
kernel size is not a multiple of its stride) paints a periodic pattern with
the stride's period on the output. Its energy sits at the frequencies
``(a·H/p, b·W/p)`` for the periods ``p = 2, 4, …`` of the upsampling stages.
The score compares the power at those frequencies with the median power of
their neighbours in the spectrum, in decibels:

    score = 10 · log10( Σ_f P(f) / Σ_f median_{g ∈ N(f)} P(g) )

≈ 0 dB for outputs without periodic structure, large and positive for
checkerboards. Images are made zero-mean first (the DC term is excluded).

Natural images have a steep spectrum, so their own score is not 0 (clean
Fashion-MNIST test images score about 4 dB, from the low-frequency period-4
bins). The evaluation therefore reports the *excess* of the reconstructions'
score over the score of the clean test images they reconstruct:
``eval/checkerboard`` after training and ``eval/checkerboard_init`` for the
same config at initialisation; above 3 dB is flagged.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo

FLAG_DB = 3.0  # scores above this are reported as checkerboard artifacts


def peak_frequencies(height: int, width: int, periods: tuple[int, ...]) -> set[tuple[int, int]]:
    """The FFT bins of patterns with the given periods (DC excluded)."""
    bins = set()
    for p in periods:
        if height % p or width % p:
            continue
        for a in range(p):
            for b in range(p):
                if a or b:
                    bins.add((a * height // p, b * width // p))
    return bins


def power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean power spectrum over images and channels of zero-mean images ``[N, C, H, W]``."""
    x = images.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1))


def checkerboard_score(images: torch.Tensor, periods: tuple[int, ...] = (2,), radius: int = 2) -> float:
    """The checkerboard score of ``images`` in dB (see the module docstring)."""
    h, w = images.shape[-2:]
    power = power_spectrum(images)
    peaks = peak_frequencies(h, w, periods)
    if not peaks:
        return 0.0
    eps = 1e-12 * float(power.sum()) + 1e-30
    peak_total, background_total = 0.0, 0.0
    for u, v in peaks:
        neighbours = [
            float(power[(u + du) % h, (v + dv) % w])
            for du in range(-radius, radius + 1)
            for dv in range(-radius, radius + 1)
            if (du or dv) and ((u + du) % h, (v + dv) % w) not in peaks and ((u + du) % h, (v + dv) % w) != (0, 0)
        ]
        peak_total += float(power[u, v])
        background_total += float(torch.tensor(neighbours).median()) if neighbours else 0.0
    return 10.0 * math.log10((peak_total + eps) / (background_total + eps))


def decoder_periods(model) -> tuple[int, ...]:
    """Periods of the decoder's upsampling stages: 2, 4, … (2 for decoders without stages)."""
    stages = len(getattr(model.decoder, "stages", [])) or 1
    return tuple(2 ** (i + 1) for i in range(stages))


@torch.no_grad()
def decoder_outputs(model, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The model's reconstructions of ``images`` (through its own path: max-unpooling gets its switches)."""
    return torch.cat([model.in_range(model.reconstruct(part.to(model.device))).cpu() for part in images.split(batch)])


class ArtifactsTask(EvalTask):
    """Checkerboard excess (dB) of the reconstructions over the clean images, trained and at initialisation.

    Args:
        num_images: test images whose reconstructions enter the spectrum.
    """

    name = "artifacts"
    needs = ("images",)

    def __init__(self, num_images: PositiveInt = 1000):
        check_arguments(ArtifactsTask, locals(), "eval.artifacts")
        self.num_images = int(num_images)

    def metric_info(self) -> list[MetricInfo]:
        return [
            MetricInfo("eval/checkerboard", "checkerboard excess after training (dB)", False, None, True),
            MetricInfo("eval/checkerboard_init", "checkerboard excess at initialisation (dB)", False, None, True),
        ]

    def run(self, run, out_dir: Path) -> EvalResult:
        periods = decoder_periods(run.model)
        images = run.data.images("test", limit=self.num_images)
        data = checkerboard_score(images, periods)
        trained = checkerboard_score(decoder_outputs(run.model, images), periods)
        init = checkerboard_score(decoder_outputs(run.fresh_model(), images), periods)
        metrics = {"eval/checkerboard": trained - data, "eval/checkerboard_init": init - data}
        details = {
            "periods": list(periods),
            "flag_db": FLAG_DB,
            "score_data_db": data,
            "score_trained_db": trained,
            "score_init_db": init,
            "flagged": trained - data > FLAG_DB,
            "flagged_init": init - data > FLAG_DB,
        }
        return EvalResult(metrics, details)
