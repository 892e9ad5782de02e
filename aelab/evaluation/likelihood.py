"""Test log-likelihood of a VAE by the importance-weighted bound (Burda et al. 2016), with many samples."""

from __future__ import annotations

from pathlib import Path

import torch

from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo


class NLLTask(EvalTask):
    """``eval/nll_iwae``: the negative IWAE bound L_k on the test images, in nats (VAEs).

    Args:
        samples: importance samples k (Burda et al. report k = 5000).
        num_images: test images estimated (null: all).
    """

    name = "nll"
    needs = ("iwae",)

    def __init__(self, samples: PositiveInt = 5000, num_images: PositiveInt | None = 1000):
        check_arguments(NLLTask, locals(), "eval.nll")
        self.samples, self.num_images = int(samples), num_images

    def metric_info(self) -> list[MetricInfo]:
        return [
            MetricInfo("eval/nll_iwae", "test NLL (IWAE, nats)", False, None, True),
            MetricInfo("eval/nll_iwae_samples", "IWAE samples"),
        ]

    def run(self, run, out_dir: Path) -> EvalResult:
        model = run.model
        generator = torch.Generator(device=model.device).manual_seed(0)
        bound = map_batches(
            run.data.batches("test", limit=self.num_images, device=model.device),
            lambda b: {"bound": model.iwae_bound(b["image"], self.samples, generator)},
            self.num_images,
        )["bound"]
        return EvalResult(
            {"eval/nll_iwae": float(-bound.mean()), "eval/nll_iwae_samples": self.samples},
            {"images": int(len(bound)), "samples": self.samples},
        )
