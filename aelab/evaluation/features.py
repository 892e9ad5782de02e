"""Feature extraction: how much class information the codes hold.

Codes (mean codes for VAEs) of a labelled subset of the training split train a
logistic-regression linear probe and a k-nearest-neighbour classifier
(scikit-learn, on standardised codes); both are scored on the test split's
codes. A 2-D scatter of the test codes (the codes themselves for a 2-D
bottleneck, else PCA or t-SNE) coloured by class is saved as PNG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from aelab.errors import ConfigError  # noqa: E402
from aelab.evaluation.generation import encode_loader  # noqa: E402


def probe_accuracy(train_z, train_y, test_z, test_y, max_iter: int = 1000, seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe fitted on the training codes."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    probe.fit(train_z, train_y)
    return float(probe.score(test_z, test_y))


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = 5) -> float:
    """Test accuracy of a k-nearest-neighbour classifier on the (standardised) codes."""
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    knn.fit(train_z, train_y)
    return float(knn.score(test_z, test_y))


def scatter_codes(z: np.ndarray, y: np.ndarray, class_names: list[str], path: Path, method: str = "pca", seed: int = 0, title: str = "") -> Path:
    """2-D scatter of codes coloured by class (PCA or t-SNE when the codes have more than 2 dims)."""
    if z.shape[1] == 1:
        xy, how = np.c_[z[:, 0], np.zeros(len(z))], "code"
    elif z.shape[1] == 2:
        xy, how = z, "code"
    elif method == "tsne":
        xy, how = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(z), "t-SNE"
    elif method == "pca":
        xy, how = PCA(n_components=2, random_state=seed).fit_transform(z), "PCA"
    else:
        raise ConfigError(f"probe.embedding={method!r} is not pca or tsne")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c in np.unique(y):
        sel = y == c
        name = class_names[c] if c < len(class_names) else str(c)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, label=name)
    ax.set_xlabel(f"{how} 1")
    ax.set_ylabel(f"{how} 2")
    ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.set_title(title or f"test codes ({how})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_probe(run, options, out_dir: Path) -> dict:
    """``eval/probe_acc`` and ``eval/knn_acc`` on the test codes, plus the code scatter PNG."""
    dm = run.datamodule
    num_train = options.get("num_train")
    train_z, train_y = encode_loader(run.model, dm.split_dataloader("train", limit=num_train), num_train)
    test_z, test_y = encode_loader(run.model, dm.split_dataloader("test", limit=options.get("num_test")), options.get("num_test"))
    if len(set(train_y.tolist())) < 2:
        raise ConfigError("the probe needs at least two classes in the training split (this looks like a one-class run)")
    seed = int(options.get("seed", 0))
    results = {
        "eval/probe_acc": probe_accuracy(train_z.numpy(), train_y.numpy(), test_z.numpy(), test_y.numpy(), int(options.get("max_iter", 1000)), seed),
        "eval/knn_acc": knn_accuracy(train_z.numpy(), train_y.numpy(), test_z.numpy(), test_y.numpy(), int(options.get("knn_k", 5))),
        "eval/chance_acc": float(np.bincount(test_y.numpy()).max() / len(test_y)),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = min(len(test_z), int(options.get("scatter_points", 3000)))
    path = scatter_codes(test_z[:shown].numpy(), test_y[:shown].numpy(), dm.class_names, out_dir / "codes_scatter.png",
                         options.get("embedding", "pca"), seed,
                         title=f"test codes, bottleneck {test_z.shape[1]} (probe {results['eval/probe_acc']:.3f})")
    return {"metrics": results, "files": {"codes_scatter": path},
            "details": {"train_codes": int(len(train_z)), "test_codes": int(len(test_z))}}
