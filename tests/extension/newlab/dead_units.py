"""An evaluation: how many code units are never used on the test images."""

from aelab.extend import EvalResult, EvalTask, MetricInfo, NonNegativeFloat, PositiveInt, check_arguments, map_batches


class DeadUnitsTask(EvalTask):
    """The share of code units whose magnitude stays at or below ``threshold`` on every test image."""

    name = "dead_units"
    needs = ()  # see docs/extending.md for every need: labels, one_class, factors, images, masks, elbo, prior, iwae

    def __init__(self, threshold: NonNegativeFloat = 1e-6, num_images: PositiveInt | None = None):
        check_arguments(DeadUnitsTask, locals(), "eval.dead_units")
        self.threshold, self.num_images = float(threshold), num_images

    def metric_info(self) -> list[MetricInfo]:
        return [MetricInfo("eval/dead_units", "share of dead code units", False, None, True)]

    def run(self, run, out_dir) -> EvalResult:
        model = run.model
        batches = run.data.batches("test", self.num_images, model.device)  # float images on the model's device
        z = map_batches(batches, lambda b: {"z": model.encode(b["image"])})["z"]
        dead = (z.abs() <= self.threshold).all(dim=0)
        (out_dir / "dead_units.txt").write_text(" ".join(str(int(i)) for i in dead.nonzero().flatten()) + "\n")
        return EvalResult(
            metrics={"eval/dead_units": float(dead.float().mean())},
            details={"dead": [int(i) for i in dead.nonzero().flatten()], "threshold": self.threshold},
            files={"dead_units": "dead_units.txt"},  # relative to out_dir: recorded relative to the run folder
        )
