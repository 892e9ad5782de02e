"""Exact PCA as a baseline, and how close a linear autoencoder comes to it.

Baldi & Hornik (1989): a linear autoencoder trained with squared error has
its optimum where the decoder's columns span the principal subspace — the
same reconstruction error as PCA with as many components. This module fits
PCA (scikit-learn, exact covariance eigendecomposition) on the run's own
training split at the run's bottleneck size, reconstructs the same test
images, and measures the principal angles between the learned decoder's
column space and the top principal components (linear decoders only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo


def split_matrix(datamodule, split: str, limit: int | None = None) -> np.ndarray:
    """The images of ``split`` as float pixels in [0, 1], one flattened image per row."""
    return datamodule.images(split, limit).flatten(1).numpy().astype(np.float64)


def fit_pca(train: np.ndarray, k: int):
    """Exact PCA with ``k`` components (covariance eigendecomposition: N ≫ D)."""
    from sklearn.decomposition import PCA

    solver = "covariance_eigh" if train.shape[0] > train.shape[1] else "full"
    return PCA(n_components=k, svd_solver=solver).fit(train)


def pca_test_mse(pca, test: np.ndarray) -> float:
    """Per-pixel mean squared error of PCA's reconstruction of ``test``."""
    recon = pca.inverse_transform(pca.transform(test))
    return float(np.mean((recon - test) ** 2))


def linear_decoder_matrix(model) -> np.ndarray | None:
    """The decoder's ``D × k`` weight matrix if the decoder is a single affine map, else None."""
    decoder = model.decoder
    body = getattr(decoder, "body", None)
    has_hidden = body is not None and any(isinstance(m, torch.nn.Linear) for m in body.modules())
    head = getattr(decoder, "head", None)
    if has_hidden or not isinstance(head, torch.nn.Linear) or getattr(model, "output_activation", "") != "identity":
        return None
    return head.weight.detach().cpu().double().numpy()


def principal_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees) between the column spaces of ``a`` and ``b``, largest first."""
    from scipy.linalg import subspace_angles

    return np.degrees(subspace_angles(a, b))


class PCATask(EvalTask):
    """``eval/pca_recon_loss`` at the run's bottleneck, the model's clean test MSE, their ratio, and angles.

    Args:
        num_train: training images the PCA is fitted on (null: all).
    """

    name = "pca"

    def __init__(self, num_train: PositiveInt | None = None):
        check_arguments(PCATask, locals(), "eval.pca")
        self.num_train = num_train

    def metric_info(self) -> list[MetricInfo]:
        return [
            MetricInfo("eval/pca_recon_loss", "PCA test MSE (same code size)", False, None, True, "test/recon_loss"),
            MetricInfo(
                "eval/model_test_mse", "model test MSE (clean inputs)", False, None, True, restates="test/recon_loss"
            ),
            MetricInfo("eval/recon_vs_pca", "model MSE / PCA MSE", False, None, True),
            MetricInfo("eval/pca_explained_variance", "PCA explained variance", True, None, True),
            MetricInfo("eval/principal_angle_max_deg", "largest principal angle to PCA (deg)", False, None, True),
            MetricInfo("eval/principal_angle_mean_deg", "mean principal angle to PCA (deg)", False, None, True),
        ]

    def run(self, run, out_dir: Path) -> EvalResult:
        k = int(run.model.bottleneck)
        dm, model = run.data, run.model
        pca = fit_pca(split_matrix(dm, "train", self.num_train), k)
        test = split_matrix(dm, "test")
        pca_mse = pca_test_mse(pca, test)
        model_mse = float(
            map_batches(
                dm.batches("test", device=model.device),
                lambda b: {"mse": (model.reconstruct(b["image"]) - b["image"]).pow(2).flatten(1).mean(1)},
            )["mse"].mean()
        )
        metrics = {
            "eval/pca_recon_loss": pca_mse,
            "eval/model_test_mse": model_mse,
            "eval/recon_vs_pca": model_mse / pca_mse,
            "eval/pca_explained_variance": float(pca.explained_variance_ratio_.sum()),
        }
        details = {"components": k, "train_images": int(pca.n_samples_), "test_images": int(test.shape[0])}
        weights = linear_decoder_matrix(model)
        if weights is not None:
            angles = principal_angles_deg(weights, pca.components_.T)
            metrics["eval/principal_angle_max_deg"] = float(angles.max())
            metrics["eval/principal_angle_mean_deg"] = float(angles.mean())
            details["principal_angles_deg"] = [round(float(a), 3) for a in angles]
        return EvalResult(metrics, details)
