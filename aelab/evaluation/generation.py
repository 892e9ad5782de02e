"""Generation from autoencoders: samples, latent interpolations and latent traversals.

* VAEs sample from their prior N(0, I); deterministic autoencoders draw codes
  from a Gaussian fitted (mean and full covariance) to the codes of training
  images (``model.sample``).
* Interpolations decode straight lines between the (mean) codes of two test images.
* Traversals (models with a prior) vary one latent dimension at a time around a
  test image's code, one row per dimension, the dimensions sorted by their KL
  (most used first).

:class:`GenerationTask` draws all three; the ``GenerationGrids`` callback is the
same task run after testing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from aelab.analysis.images import image_grid, publish_image
from aelab.config.constraints import PositiveFloat, PositiveInt
from aelab.config.signatures import check_arguments
from aelab.evaluation.task import EvalResult, EvalTask


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


class GenerationTask(EvalTask):
    """``samples.png``, ``interpolation.png`` and (VAEs) ``traversal.png``.

    Args:
        num_samples: generated images (8 per row).
        num_pairs, steps: interpolation rows and decoded points per row.
        traversal_dims, traversal_span, traversal_steps: traversals — how many dimensions
            (highest KL first), the range in prior standard deviations, points per row.
        fit_codes: training images whose codes a deterministic autoencoder's Gaussian is fitted to.
        regenerate: in ``aelab-eval``, draw again even when the run's ``samples/`` has the grids.
    """

    name = "generation"
    needs = ("images", "unit_range")

    def __init__(
        self,
        num_samples: PositiveInt = 64,
        num_pairs: PositiveInt = 6,
        steps: PositiveInt = 10,
        traversal_dims: PositiveInt = 10,
        traversal_span: PositiveFloat = 3.0,
        traversal_steps: PositiveInt = 9,
        fit_codes: PositiveInt = 5000,
        regenerate: bool = False,
    ):
        check_arguments(GenerationTask, locals(), "eval.generation")
        self.num_samples, self.num_pairs, self.steps = int(num_samples), int(num_pairs), int(steps)
        self.traversal_dims, self.traversal_span, self.traversal_steps = (
            int(traversal_dims),
            float(traversal_span),
            int(traversal_steps),
        )
        self.fit_codes, self.regenerate = int(fit_codes), bool(regenerate)

    def run(self, run, out_dir: Path) -> EvalResult:
        names = ("samples", "interpolation", "traversal")
        existing = {p.stem: p for p in (run.run_dir / "samples").glob("*.png") if p.stem in names}
        if existing and not self.regenerate:
            return EvalResult(files=existing, details={"reused": sorted(existing)})
        return EvalResult(files=self.draw(run.model, run.data, out_dir))

    def draw(self, model, datamodule, dirpath: Path, loggers: Iterable = (), step: int = 0) -> dict[str, Path]:
        """Draw the grids of ``model`` into ``dirpath`` (and the loggers); returns the files written."""
        was_training = model.training
        model.eval()
        written: dict[str, Path] = {}
        try:
            with torch.no_grad():
                images = datamodule.images("test", limit=2 * self.num_pairs)
                samples = model.sample(
                    self.num_samples, batches=datamodule.batches("train", limit=self.fit_codes, device=model.device)
                )
                written["samples"] = dirpath / "samples.png"
                publish_image(
                    image_grid(samples, 8, title=f"{len(samples)} decoded {model.sampling}"),
                    written["samples"],
                    "generation/samples",
                    loggers,
                    step,
                    caption=model.sampling,
                )
                pairs = images.shape[0] // 2
                if pairs >= 1:
                    rows = interpolation_rows(model, images[:pairs], images[pairs : 2 * pairs], self.steps)
                    written["interpolation"] = dirpath / "interpolation.png"
                    publish_image(
                        image_grid(
                            rows,
                            self.steps + 2,
                            title="test image | points on the line between their codes | test image",
                        ),
                        written["interpolation"],
                        "generation/interpolation",
                        loggers,
                        step,
                        caption="test image | decoded points on the line between their codes | test image",
                    )
                kl = list(model.kl_per_dim)
                if kl:
                    dims = sorted(range(len(kl)), key=lambda d: -kl[d])[: self.traversal_dims]
                    rows = traversal_rows(model, images[0], dims, self.traversal_span, self.traversal_steps)
                    written["traversal"] = dirpath / "traversal.png"
                    caption = "one row per latent dimension, by KL: " + ", ".join(
                        f"z{d} ({kl[d]:.2f} nats)" for d in dims
                    )
                    publish_image(
                        image_grid(
                            rows,
                            self.traversal_steps,
                            row_labels=[f"z{d}" for d in dims],
                            title=f"latent traversals, -{self.traversal_span:g} to +{self.traversal_span:g} prior std",
                        ),
                        written["traversal"],
                        "generation/traversal",
                        loggers,
                        step,
                        caption=caption,
                    )
        finally:
            model.train(was_training)
        return written
