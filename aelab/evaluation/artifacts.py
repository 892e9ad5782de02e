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
"""

from __future__ import annotations

import math

import torch

from aelab.evaluation.generation import encode_loader

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
    for (u, v) in peaks:
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
def decoded_test_images(model, datamodule, n: int) -> torch.Tensor:
    """The model's decoder outputs for the codes of the first ``n`` test images."""
    codes, _ = encode_loader(model, datamodule.split_dataloader("test", limit=n), n)
    return model.decode(codes.to(model.device)).cpu()


def evaluate_artifacts(run, options, fresh_model) -> dict:
    """``eval/checkerboard`` after training and ``eval/checkerboard_init`` for the same config at initialisation."""
    n = int(options.get("num_images", 1000))
    periods = decoder_periods(run.model)
    trained = checkerboard_score(decoded_test_images(run.model, run.datamodule, n), periods)
    init = checkerboard_score(decoded_test_images(fresh_model, run.datamodule, n), periods)
    metrics = {"eval/checkerboard": trained, "eval/checkerboard_init": init}
    return {"metrics": metrics, "details": {"periods": list(periods), "flag_db": FLAG_DB,
                                            "flagged": trained > FLAG_DB, "flagged_init": init > FLAG_DB}}
