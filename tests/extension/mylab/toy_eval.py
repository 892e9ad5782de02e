"""An evaluation from outside aelab: statistics of the test codes."""

from __future__ import annotations

from pathlib import Path

from aelab.batches import map_batches
from aelab.constraints import PositiveInt
from aelab.signatures import check_arguments

from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo


class CodeStatsTask(EvalTask):
    """``eval/code_norm`` (mean L2 norm of the test codes) and ``eval/code_std`` (their mean per-unit std).

    Args:
        num_images: test images encoded (null: all).
    """

    name = "code_stats"
    needs = ("labels",)

    def __init__(self, num_images: PositiveInt | None = None):
        check_arguments(CodeStatsTask, locals(), "eval.code_stats")
        self.num_images = num_images

    def metric_info(self) -> list[MetricInfo]:
        return [
            MetricInfo("eval/code_norm", "mean code norm", None, None, True),
            MetricInfo("eval/code_std", "mean per-unit std of the codes", None, None, True),
        ]

    def run(self, run, out_dir: Path) -> EvalResult:
        model = run.model
        z = map_batches(
            run.data.batches("test", self.num_images, model.device),
            lambda b: {"z": model.encode(b["image"])},
            self.num_images,
        )["z"]
        return EvalResult(
            {"eval/code_norm": float(z.norm(dim=1).mean()), "eval/code_std": float(z.std(0).mean())},
            {"images": int(len(z))},
        )
