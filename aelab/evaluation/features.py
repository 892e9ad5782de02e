"""Feature extraction: how much class information the codes hold.

Codes (mean codes for VAEs) of a labelled subset of the training split train a
logistic-regression linear probe and a k-nearest-neighbour classifier
(scikit-learn, on standardised codes); both are scored on the test split's
codes. A 2-D scatter of the test codes (the codes themselves for a 2-D
bottleneck, else PCA or t-SNE) coloured by class is saved as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from aelab.analysis import style
from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.errors import ConfigError
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo


def encode(model, batches, limit: int | None = None):
    """Codes (mean codes for VAEs) and labels of ``batches``, on the CPU."""
    out = map_batches(batches, lambda b: {"z": model.encode(b["image"]), "y": b["label"]}, limit)
    return out["z"], out["y"]


def probe_accuracy(train_z, train_y, test_z, test_y, max_iter: int = 1000, seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe fitted on the training codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    probe.fit(train_z, train_y)
    return float(probe.score(test_z, test_y))


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = 5) -> float:
    """Test accuracy of a k-nearest-neighbour classifier on the (standardised) codes."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    knn.fit(train_z, train_y)
    return float(knn.score(test_z, test_y))


@style.styled
def scatter_codes(
    z: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    path: Path,
    method: str = "pca",
    seed: int = 0,
    title: str = "",
) -> Path:
    """2-D scatter of codes coloured by class (PCA or t-SNE when the codes have more than 2 dims), PNG and PDF."""
    if z.shape[1] == 1:
        xy, how = np.c_[z[:, 0], np.zeros(len(z))], "code"
    elif z.shape[1] == 2:
        xy, how = z, "code"
    elif method == "tsne":
        from sklearn.manifold import TSNE

        xy, how = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(z), "t-SNE"
    elif method == "pca":
        from sklearn.decomposition import PCA

        xy, how = PCA(n_components=2, random_state=seed).fit_transform(z), "PCA"
    else:
        raise ConfigError(f"probe.embedding={method!r} is not pca or tsne")
    fig, axes = style.figure(1, 1, panel=(4.8, 3.4))
    ax = axes[0, 0]
    for i, c in enumerate(np.unique(y)):
        sel = y == c
        name = class_names[c] if c < len(class_names) else str(c)
        color = style.CATEGORICAL[i % len(style.CATEGORICAL)]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, color=color, label=name, rasterized=True, lw=0)
    ax.set_xlabel(f"{how} 1" if how != "code" else "code dimension 1")
    ax.set_ylabel(f"{how} 2" if how != "code" else ("code dimension 2" if z.shape[1] == 2 else ""))
    fig.legend(markerscale=4, loc="outside right upper", title="class")
    ax.set_title(title or f"test codes ({how})")
    style.note(fig, f"{len(z)} test images, one point each" + (f", projected by {how}" if how != "code" else ""))
    return style.save(fig, path)


class ProbeTask(EvalTask):
    """``eval/probe_acc`` and ``eval/knn_acc`` of the test codes, plus a scatter of them.

    On a one-class run the probe is fitted on the dataset's labelled training
    images of every class (the codes of the one-class model), not refused.

    Args:
        num_train: labelled training images whose codes fit the probe and the k-NN (null: all).
        num_test: test images scored (null: all).
        knn_k: neighbours of the k-NN classifier.
        max_iter: iterations of the logistic regression.
        embedding: 2-D view of codes wider than 2: ``pca`` or ``tsne``.
        scatter_points: test codes drawn in the scatter.
        seed: of the probe and the embedding.
    """

    name = "probe"
    needs = ("labels",)

    def __init__(
        self,
        num_train: PositiveInt | None = 10000,
        num_test: PositiveInt | None = None,
        knn_k: PositiveInt = 5,
        max_iter: PositiveInt = 1000,
        embedding: Literal["pca", "tsne"] = "pca",
        scatter_points: PositiveInt = 3000,
        seed: int = 0,
    ):
        check_arguments(ProbeTask, locals(), "eval.probe")
        self.num_train, self.num_test, self.knn_k, self.max_iter = num_train, num_test, int(knn_k), int(max_iter)
        self.embedding, self.scatter_points, self.seed = embedding, int(scatter_points), int(seed)

    def metric_info(self) -> list[MetricInfo]:
        return [
            MetricInfo("eval/probe_acc", "linear-probe accuracy", True, None, True),
            MetricInfo("eval/knn_acc", f"k-NN accuracy (k = {self.knn_k})", True, None, True),
            MetricInfo("eval/chance_acc", "chance (majority class)", baseline_for=("eval/probe_acc", "eval/knn_acc")),
        ]

    def run(self, run, out_dir: Path) -> EvalResult:
        dm = run.data.all_classes()
        model = run.model
        train_z, train_y = encode(model, dm.batches("train", limit=self.num_train, device=model.device), self.num_train)
        test_z, test_y = encode(model, dm.batches("test", limit=self.num_test, device=model.device), self.num_test)
        if len(set(train_y.tolist())) < 2:
            raise ConfigError(f"the probe needs at least two classes in the training split of {dm.name}")
        results = {
            "eval/probe_acc": probe_accuracy(
                train_z.numpy(), train_y.numpy(), test_z.numpy(), test_y.numpy(), self.max_iter, self.seed
            ),
            "eval/knn_acc": knn_accuracy(train_z.numpy(), train_y.numpy(), test_z.numpy(), test_y.numpy(), self.knn_k),
            "eval/chance_acc": float(np.bincount(test_y.numpy()).max() / len(test_y)),
        }
        shown = min(len(test_z), self.scatter_points)
        path = scatter_codes(
            test_z[:shown].numpy(),
            test_y[:shown].numpy(),
            dm.class_names,
            out_dir / "codes_scatter.png",
            self.embedding,
            self.seed,
            title=f"test codes, bottleneck {test_z.shape[1]} (probe {results['eval/probe_acc']:.3f})",
        )
        return EvalResult(
            results,
            {
                "train_codes": int(len(train_z)),
                "test_codes": int(len(test_z)),
                "one_class_run_probed_on_all_classes": run.data.normal_class is not None,
            },
            {"codes_scatter": path},
        )
