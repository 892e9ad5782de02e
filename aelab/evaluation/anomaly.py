"""Anomaly detection: image-level AUROC/AP, and pixel-level AUROC and per-region overlap where masks exist.

Two protocols, one task:

* **one-class** (Ruff et al. 2018, Deep SVDD): train on class k only
  (``data.normal_class=k``); test on the whole test split, class k normal and
  every other class anomalous;
* **an anomaly set** whose dataset marks its normal images (``normal_label``:
  ``data=anomaly_folder``, MVTec AD's ``good``), with per-pixel ground truth.

The score of an image is its reconstruction error — the mean of its per-pixel
error map, or the mean of the top ``topk`` share of it (``score=topk``) — and,
for VAEs, also the negative ELBO. Where masks exist, the per-pixel error map is
scored against them: pixel AUROC, ``eval/aupro`` (the area under the
per-region-overlap curve up to a false-positive rate of 0.3, divided by 0.3 —
MVTec AD's AU-PRO) and ``eval/pro`` (anomalib's PRO: the mean over ground-truth
regions of the share of each region's pixels above the threshold, at the
threshold with the best pixel F1). Each also per defect type (its images and the
good ones). Anomaly-map PNGs (image | reconstruction | error | mask) for a few
images of each defect type go into the run's ``eval/`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from aelab.analysis.images import image_grid, save_png
from aelab.config.constraints import NonNegativeInt, PositiveInt, Probability
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.errors import ConfigError
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo

MAX_FPR = 0.3


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = anomalous)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def average_precision(labels, scores) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def regions(masks: np.ndarray) -> list[np.ndarray]:
    """The flat pixel indices of each connected ground-truth region (8-connectivity) of ``masks`` ``[N, H, W]``."""
    from scipy.ndimage import label

    out = []
    offset = 0
    structure = np.ones((3, 3), dtype=int)
    for mask in masks:
        labelled, n = label(mask > 0, structure=structure)
        flat = labelled.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(1, n + 2))
        out += [offset + order[bounds[i] : bounds[i + 1]] for i in range(n)]
        offset += mask.size
    return out


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, max_fpr: float = MAX_FPR, steps: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, pro)`` on a grid of pixel false-positive rates 0 … ``max_fpr``: the best mean per-region overlap
    reachable at each rate (thresholds at ``steps`` quantiles of the scores; ties handled as a step curve)."""
    scores = maps.ravel()
    normal = np.sort(scores[masks.ravel() == 0])
    region_scores = [np.sort(scores[r]) for r in regions(masks)]
    grid = np.linspace(0, max_fpr, steps)
    if not region_scores or not len(normal):
        return grid, np.full(steps, np.nan)
    levels = np.unique(np.quantile(scores, np.linspace(0, 1, steps)))
    thresholds = np.concatenate([levels, [levels[0] - 1.0]])  # the last flags every pixel: FPR 1
    fpr = 1 - np.searchsorted(normal, thresholds, side="right") / len(normal)
    pro = np.mean([1 - np.searchsorted(rs, thresholds, side="right") / len(rs) for rs in region_scores], axis=0)
    rates, best = np.unique(fpr, return_inverse=True)
    top = np.full(len(rates), -np.inf)
    np.maximum.at(top, best, pro)  # the best overlap at each reachable rate
    top = np.maximum.accumulate(top)  # a higher rate can always do at least as well
    return grid, np.interp(grid, rates, top)


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (1 = every region found before any false
    positive).
    """
    fpr, pro = pro_curve(maps, masks, max_fpr)
    if np.isnan(pro).all():
        return float("nan")
    return float(np.trapezoid(pro, fpr) / max_fpr)


def pro_at(maps: np.ndarray, masks: np.ndarray, threshold: float) -> float:
    """anomalib's PRO: the mean over ground-truth regions of the share of their pixels scored above ``threshold``."""
    scores = maps.ravel()
    overlaps = [float((scores[r] > threshold).mean()) for r in regions(masks)]
    return float(np.mean(overlaps)) if overlaps else float("nan")


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold of the best F1 score (anomalib's adaptive threshold)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else float(scores.max())


def image_score(maps: torch.Tensor, score: str = "mean", topk: float = 0.01) -> torch.Tensor:
    """An image's anomaly score from its per-pixel error map: the ``mean``, or the mean of its ``topk`` largest "
    "share."""
    flat = maps.flatten(1)
    if score == "mean":
        return flat.mean(1)
    k = max(1, int(round(topk * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(1)


def heatmap(maps: torch.Tensor) -> torch.Tensor:
    """Error maps ``[N, 1, H, W]`` as RGB heat maps in [0, 1] (each scaled to the largest error shown)."""
    from matplotlib import colormaps

    scaled = (maps / maps.flatten(1).amax(1).clamp(min=1e-12)[:, None, None, None]).clamp(0, 1)
    rgb = colormaps["inferno"](scaled[:, 0].numpy())[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


class AnomalyTask(EvalTask):
    """Image-level AUROC/AP of per-image scores; pixel AUROC, AU-PRO and PRO where the test split has masks.

    Args:
        normal_class: the normal class (null: the run's ``data.normal_class``, or the dataset's own normal label).
        scores: ``mse`` (reconstruction error); VAEs are also scored by ``elbo`` (the negative ELBO).
        score: how an image's error map becomes its score: ``mean`` or ``topk`` (the mean of its ``topk`` largest
        share).
        topk: the share of pixels ``score=topk`` averages.
        map_images: images of each defect type drawn as anomaly maps (0: none).
        max_pixels: pixel-level metrics use at most this many test pixels (a seeded sample of whole images beyond it).
    """

    name = "anomaly"
    needs = ("one_class",)
    needs_when = {"scores": {"elbo": "elbo"}}

    def __init__(
        self,
        normal_class: NonNegativeInt | None = None,
        scores: list[Literal["mse", "elbo"]] = ("mse",),
        score: Literal["mean", "topk"] = "mean",
        topk: Probability = 0.01,
        map_images: NonNegativeInt = 4,
        max_pixels: PositiveInt = 20_000_000,
    ):
        check_arguments(AnomalyTask, locals(), "eval.anomaly")
        self.normal_class, self.scores, self.score, self.topk = normal_class, list(scores), score, float(topk)
        self.map_images, self.max_pixels = int(map_images), int(max_pixels)

    def metric_info(self) -> list[MetricInfo]:
        infos = []
        for name in ("mse", "elbo"):
            suffix = "" if name == "mse" else f"_{name}"
            label = "" if name == "mse" else " (−ELBO score)"
            infos += [
                MetricInfo(f"eval/auroc{suffix}", f"anomaly AUROC{label}", True, None, True),
                MetricInfo(f"eval/ap{suffix}", f"anomaly average precision{label}", True, None, True),
            ]
        infos += [
            MetricInfo("eval/pixel_auroc", "pixel-level anomaly AUROC", True, None, True),
            MetricInfo("eval/aupro", "AU-PRO (FPR ≤ 0.3)", True, None, True),
            MetricInfo("eval/pro", "PRO at the best-F1 pixel threshold", True, None, True),
        ]
        return infos + [
            MetricInfo("eval/anomaly_normal_class", "normal class"),
            MetricInfo("eval/anomaly_fraction", "anomalous share of the test split"),
        ]

    def run(self, run, out_dir: Path) -> EvalResult:
        dm, model = run.data, run.model
        normal = next(v for v in (self.normal_class, dm.normal_class, dm.normal_label) if v is not None)
        names = list(self.scores) + (["elbo"] if "elbo" in model.features and "elbo" not in self.scores else [])
        pixel_level = dm.is_images and dm.has_masks

        def score(batch):
            x = batch["image"]
            maps = model.error_map(x)
            out = {
                "map_score": image_score(maps, self.score, self.topk),
                "label": batch["label"],
                "id": batch["id"],
                **model.anomaly_scores(x),
            }
            if pixel_level:
                out["map"] = maps.half()
                out["mask"] = batch["mask"]
            return out

        scores = map_batches(dm.batches("test", device=model.device), score)
        class_labels = scores["label"].numpy()
        labels = (class_labels != normal).astype(int)
        if labels.min() == labels.max():
            raise ConfigError(f"the test split holds only {'anomalies' if labels[0] else 'normal images'}: no AUROC")
        scores["mse"] = scores["map_score"]  # the image score of the error map (mean, or top-k)
        results: dict = {"eval/anomaly_normal_class": normal}
        for name in names:
            suffix = "" if name == "mse" else f"_{name}"
            values = scores[name].numpy()
            results[f"eval/auroc{suffix}"] = auroc(labels, values)
            results[f"eval/ap{suffix}"] = average_precision(labels, values)
        results["eval/anomaly_fraction"] = float(labels.mean())
        details: dict = {"normal_class": normal, "test_images": int(len(labels)), "score": self.score}
        files: dict = {"scores": self._write_scores(out_dir / "anomaly_scores.csv", scores, names)}
        kinds = {k: n for k, n in enumerate(dm.class_names) if k != normal and (class_labels == k).any()}
        per_kind = {}
        for k, kind in kinds.items():
            sel = (class_labels == k) | (class_labels == normal)
            per_kind[kind] = {
                "auroc": auroc(labels[sel], scores["mse"].numpy()[sel]),
                "images": int((class_labels == k).sum()),
            }
        if pixel_level:
            maps, masks = scores["map"].float().numpy()[:, 0], scores["mask"].numpy()[:, 0]
            take = self._pixel_sample(len(maps), maps[0].size)
            results.update(self._pixel_metrics(maps[take], masks[take]))
            for k, kind in kinds.items():
                sel = take[((class_labels[take] == k) | (class_labels[take] == normal))]
                if masks[sel].any():
                    per_kind[kind].update(
                        {m.split("/")[1]: v for m, v in self._pixel_metrics(maps[sel], masks[sel]).items()}
                    )
            details["pixels"] = int(len(take) * maps[0].size)
            if self.map_images:
                files.update(self._draw_maps(run, scores, class_labels, kinds, normal, out_dir))
        details["per_type"] = per_kind
        for kind, values in per_kind.items():
            for metric, value in values.items():
                if metric != "images":
                    results[f"eval/anomaly/{kind}/{metric}"] = value
        return EvalResult(results, details, files)

    @staticmethod
    def _write_scores(path: Path, scores: dict, names: list[str]) -> Path:
        """Every test image's scores: ``id,label,<score>...`` (the ids are the dataset's, as ``aelab-predict`` writes
        them).
        """
        from aelab.store.files import write_text_atomic

        lines = ["id,label," + ",".join(names)]
        columns = [scores[n].numpy() for n in names]
        for i, (ident, label) in enumerate(zip(scores["id"].tolist(), scores["label"].tolist())):
            lines.append(f"{ident},{label}," + ",".join(f"{c[i]:.8g}" for c in columns))
        write_text_atomic(path, "\n".join(lines) + "\n")
        return path

    def _pixel_sample(self, n: int, pixels: int) -> np.ndarray:
        keep = max(1, self.max_pixels // pixels)
        if n <= keep:
            return np.arange(n)
        return np.sort(np.random.default_rng(0).choice(n, keep, replace=False))

    @staticmethod
    def _pixel_metrics(maps: np.ndarray, masks: np.ndarray) -> dict:
        flat_masks, flat_maps = masks.ravel().astype(int), maps.ravel()
        if flat_masks.min() == flat_masks.max():
            return {}
        threshold = best_f1_threshold(flat_masks, flat_maps)
        return {
            "eval/pixel_auroc": auroc(flat_masks, flat_maps),
            "eval/aupro": aupro(maps, masks),
            "eval/pro": pro_at(maps, masks, threshold),
        }

    def _draw_maps(self, run, scores: dict, class_labels: np.ndarray, kinds: dict, normal: int, out_dir: Path) -> dict:
        """One PNG per defect type: image | reconstruction | error heat map | mask, for ``map_images`` images."""
        dm, model = run.data, run.model
        images = None
        files = {}
        for k, kind in {normal: dm.class_names[normal], **kinds}.items():
            index = np.nonzero(class_labels == k)[0][: self.map_images]
            if not len(index):
                continue
            if images is None:
                images = dm.images("test")
            x = images[torch.as_tensor(index)]
            with torch.no_grad():
                recon = model.reconstruct(x.to(model.device)).cpu()
            maps = scores["map"][torch.as_tensor(index)].float()
            masks = scores["mask"][torch.as_tensor(index)].float()
            rows = [x, recon, heatmap(maps), masks]
            files[f"map_{kind}"] = save_png(
                image_grid(
                    [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r for r in rows],
                    row_labels=["test images", "reconstructions", "squared error (heat)", "true anomaly mask"],
                    title=f"Anomaly maps: {kind} (each error map scaled to its own largest error)",
                ),
                out_dir / f"anomaly_map_{kind}.png",
            )
        return files
