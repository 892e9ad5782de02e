"""One-class anomaly detection (the protocol of Ruff et al. 2018, Deep SVDD).

Train on the training images of one class k only (``data.normal_class=k``);
test on the whole test split, class k as normal (label 0) and every other class
as anomalous (label 1). The anomaly score of an image is its reconstruction
error — per-image MSE of the reconstruction of the clean image — and, for VAEs,
also the negative ELBO (``model.anomaly_scores``). Reported: AUROC and average
precision (scikit-learn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from aelab.batches import map_batches
from aelab.constraints import NonNegativeInt
from aelab.errors import ConfigError
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo
from aelab.signatures import check_arguments


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = anomalous)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def average_precision(labels, scores) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


class AnomalyTask(EvalTask):
    """AUROC and AP of per-image anomaly scores for the run's normal class.

    Args:
        normal_class: the normal class (null: the run's ``data.normal_class``).
        scores: ``mse`` (reconstruction error); VAEs are also scored by ``elbo`` (the negative ELBO).
    """

    name = "anomaly"
    needs = ("one_class",)
    needs_when = {"scores": {"elbo": "elbo"}}

    def __init__(self, normal_class: NonNegativeInt | None = None, scores: list[Literal["mse", "elbo"]] = ("mse",)):
        check_arguments(AnomalyTask, locals(), "eval.anomaly")
        self.normal_class = normal_class
        self.scores = list(scores)

    def _score_names(self, model) -> list[str]:
        names = list(self.scores)
        if "elbo" in model.features and "elbo" not in names:
            names.append("elbo")
        return names

    def metric_info(self) -> list[MetricInfo]:
        infos = []
        for name in ("mse", "elbo"):
            suffix = "" if name == "mse" else f"_{name}"
            label = "" if name == "mse" else " (−ELBO score)"
            infos += [MetricInfo(f"eval/auroc{suffix}", f"anomaly AUROC{label}", True, None, True),
                      MetricInfo(f"eval/ap{suffix}", f"anomaly average precision{label}", True, None, True)]
        return infos + [MetricInfo("eval/anomaly_normal_class", "normal class"), MetricInfo("eval/anomaly_fraction", "anomalous share of the test split")]

    def run(self, run, out_dir: Path) -> EvalResult:
        normal = self.normal_class if self.normal_class is not None else run.datamodule.normal_class
        model = run.model
        wanted = self._score_names(model)
        scores = map_batches(run.datamodule.batches("test", device=model.device),
                             lambda b: {**model.anomaly_scores(b["image"]), "label": b["label"]})
        labels = (scores["label"] != normal).long().numpy()
        if labels.min() == labels.max():
            raise ConfigError(f"the test split holds only {'anomalies' if labels[0] else 'normal images'}: no AUROC")
        results = {"eval/anomaly_normal_class": normal}
        for name in wanted:
            suffix = "" if name == "mse" else f"_{name}"
            values = scores[name].numpy()
            results[f"eval/auroc{suffix}"] = auroc(labels, values)
            results[f"eval/ap{suffix}"] = average_precision(labels, values)
        results["eval/anomaly_fraction"] = float(labels.mean())
        return EvalResult(results, {"normal_class": normal, "test_images": int(len(labels))})
