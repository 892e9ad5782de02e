"""One-class anomaly detection (the protocol of Ruff et al. 2018, Deep SVDD).

Train on the training images of one class k only (``data.normal_class=k``);
test on the whole test split, class k as normal (label 0) and every other class
as anomalous (label 1). The anomaly score of an image is its reconstruction
error — per-image MSE of the reconstruction of the clean image — and, for VAEs,
also the negative ELBO. Reported: AUROC and average precision (scikit-learn).
"""

from __future__ import annotations

import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from aelab.errors import ConfigError
from aelab.evaluation.common import is_vae, map_batches

SCORES = ("mse", "elbo")


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = anomalous)."""
    return float(roc_auc_score(labels, scores))


def anomaly_scores(model, loader, generator_seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-image anomaly scores on the test split: ``mse`` and (VAEs) ``elbo`` (the negative ELBO)."""
    generator = torch.Generator(device=model.device).manual_seed(generator_seed)

    def score(x, batch):
        out = {"mse": (model.reconstruct(x) - x).pow(2).flatten(1).mean(1), "label": batch["label"]}
        if is_vae(model):
            out["elbo"] = -model.terms(x, x, generator)["elbo"]
        return out

    return map_batches(model, loader, score)


def evaluate_anomaly(run, options) -> dict:
    """AUROC and AP of the run's reconstruction error (and negative ELBO) for its normal class."""
    normal = run.datamodule.normal_class
    if options.get("normal_class") is not None:
        normal = int(options["normal_class"])
    if normal is None:
        raise ConfigError(
            "the anomaly task needs a one-class run: train with data.normal_class=k "
            "(or name the normal class with anomaly.normal_class=k)"
        )
    wanted = list(options.get("scores") or ["mse"])
    unknown = [s for s in wanted if s not in SCORES]
    if unknown:
        raise ConfigError(f"anomaly.scores {unknown} are not among {list(SCORES)}")
    if "elbo" in wanted and not is_vae(run.model):
        raise ConfigError("anomaly score 'elbo' needs a VAE run; this run is a deterministic autoencoder (use mse)")
    if is_vae(run.model) and "elbo" not in wanted:
        wanted.append("elbo")
    scores = anomaly_scores(run.model, run.datamodule.split_dataloader("test"))
    labels = (scores["label"] != normal).long().numpy()
    if labels.min() == labels.max():
        raise ConfigError(f"the test split holds only {'anomalies' if labels[0] else 'normal images'}: no AUROC")
    results = {"eval/anomaly_normal_class": normal}
    for name in wanted:
        suffix = "" if name == "mse" else f"_{name}"
        values = scores[name].numpy()
        results[f"eval/auroc{suffix}"] = auroc(labels, values)
        results[f"eval/ap{suffix}"] = float(average_precision_score(labels, values))
    results["eval/anomaly_fraction"] = float(labels.mean())
    return {"metrics": results, "details": {"normal_class": normal, "test_images": int(len(labels))}}
