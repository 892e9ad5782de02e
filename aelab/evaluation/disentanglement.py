"""Disentanglement: how well single code dimensions capture single generating factors.

On datasets that know their generating factors (``data=sprites``, or any source that yields ``factors``),
the codes (mean codes for VAEs) of training and test images are scored with four standard metrics,
following disentanglement_lib (Locatello et al. 2019) in their definitions and defaults:

* **MIG** (Chen et al. 2018): for each factor, the gap between the two largest mutual informations with a
  single code dimension (codes discretised into ``bins`` equal-width bins), divided by the factor's entropy;
  averaged over factors.
* **DCI** (Eastwood & Williams 2018): a gradient-boosted-trees classifier per factor gives an importance
  matrix R (code dimension × factor). *Disentanglement*: 1 − the entropy (base F) of each dimension's
  importance over factors, weighted by the dimension's share of importance; *completeness*: 1 − the entropy
  (base D) of each factor's importance over dimensions, weighted likewise; *informativeness*: the
  classifiers' mean test accuracy.
* **SAP** (Kumar et al. 2018): for each factor, the gap between the two best test accuracies of a linear
  SVM on a single code dimension; averaged.
* **FactorVAE score** (Kim & Mnih 2018): votes from batches that share one factor's value — the code
  dimension of least variance (after dividing by each dimension's overall standard deviation; dimensions
  of no variance left out) votes for that factor — and a majority-vote classifier's accuracy on held-out votes.
  Batches are drawn from the encoded images that share the value, so no renderer is needed.

All four are ≈ 1 for codes equal to the factors and ≈ 0 for codes unrelated to them (``tests/test_disentanglement.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aelab.analysis import style
from aelab.config.constraints import PositiveInt
from aelab.config.signatures import check_arguments
from aelab.data.batches import map_batches
from aelab.evaluation.task import EvalResult, EvalTask
from aelab.metric_info import MetricInfo


def discretize(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    """Each code dimension cut into ``bins`` equal-width bins over its range (integers ``[N, D]``)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], bins)[1]
        out[:, d] = np.digitize(codes[:, d], edges[:-1])
    return out


def mutual_information(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information (nats) of every discretised code dimension with every factor: ``[D, F]``."""
    from sklearn.metrics import mutual_info_score

    return np.array(
        [
            [mutual_info_score(factors[:, f], discrete_codes[:, d]) for f in range(factors.shape[1])]
            for d in range(discrete_codes.shape[1])
        ]
    )


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor's empirical distribution."""
    from sklearn.metrics import mutual_info_score

    return np.array([mutual_info_score(factors[:, f], factors[:, f]) for f in range(factors.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> tuple[float, np.ndarray]:
    """The mutual information gap and the MI matrix ``[D, F]`` it came from."""
    mi = mutual_information(discretize(codes, bins), factors)
    if mi.shape[0] < 2:
        return float("nan"), mi
    top = np.sort(mi, axis=0)[::-1]
    entropy = np.maximum(factor_entropy(factors), 1e-12)
    return float(np.mean((top[0] - top[1]) / entropy)), mi


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    logs = np.log(np.where(p > 0, p, 1.0)) / np.log(base)
    return -(p * logs).sum(1)


def dci(
    train_codes, train_factors, test_codes, test_factors, estimators: int = 100, seed: int = 0
) -> dict[str, object]:
    """DCI disentanglement, completeness and informativeness, and the importance matrix ``[D, F]``."""
    from sklearn.ensemble import GradientBoostingClassifier

    num_codes, num_factors = train_codes.shape[1], train_factors.shape[1]
    importance = np.zeros((num_codes, num_factors))
    accuracy = []
    for f in range(num_factors):
        model = GradientBoostingClassifier(n_estimators=estimators, random_state=seed)
        model.fit(train_codes, train_factors[:, f])
        importance[:, f] = np.abs(model.feature_importances_)
        accuracy.append(float(np.mean(model.predict(test_codes) == test_factors[:, f])))
    total = importance.sum()
    if total <= 0:
        return {
            "disentanglement": 0.0,
            "completeness": 0.0,
            "informativeness": float(np.mean(accuracy)),
            "importance": importance,
        }
    code_weight = importance.sum(1) / total
    factor_weight = importance.sum(0) / total
    dis = (1.0 - _entropy_rows(importance, num_factors)) if num_factors > 1 else np.ones(num_codes)
    com = (1.0 - _entropy_rows(importance.T, num_codes)) if num_codes > 1 else np.ones(num_factors)
    return {
        "disentanglement": float((dis * code_weight).sum()),
        "completeness": float((com * factor_weight).sum()),
        "informativeness": float(np.mean(accuracy)),
        "importance": importance,
    }


def sap(train_codes, train_factors, test_codes, test_factors) -> tuple[float, np.ndarray]:
    """The separated attribute predictability score and its accuracy matrix ``[D, F]`` (linear SVMs, C = 0.01)."""
    from sklearn.svm import LinearSVC

    scores = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    for d in range(train_codes.shape[1]):
        for f in range(train_factors.shape[1]):
            x, y = train_codes[:, d : d + 1], train_factors[:, f]
            if len(np.unique(y)) < 2:
                continue
            clf = LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(x, y)
            scores[d, f] = float(np.mean(clf.predict(test_codes[:, d : d + 1]) == test_factors[:, f]))
    if scores.shape[0] < 2:
        return float("nan"), scores
    top = np.sort(scores, axis=0)[::-1]
    return float(np.mean(top[0] - top[1])), scores


def factor_vae_score(
    codes: np.ndarray,
    factors: np.ndarray,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """The FactorVAE score from encoded images with their factors (batches share one factor's value)."""
    rng = np.random.default_rng(seed)
    scale = codes.std(0)
    active = scale > 1e-6 * max(float(scale.max()), 1e-12)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0}
    normalised = codes[:, active] / scale[active]
    by_value = [
        {v: np.flatnonzero(factors[:, f] == v) for v in np.unique(factors[:, f])} for f in range(factors.shape[1])
    ]
    varying = [f for f in range(factors.shape[1]) if len(by_value[f]) > 1]

    def votes(n: int) -> np.ndarray:
        counts = np.zeros((normalised.shape[1], factors.shape[1]), dtype=np.int64)
        for _ in range(n):
            f = varying[rng.integers(len(varying))]
            value = factors[rng.integers(len(factors)), f]
            rows = rng.choice(by_value[f][value], batch_size, replace=True)
            counts[np.argmin(normalised[rows].var(0)), f] += 1
        return counts

    train, held = votes(num_train), votes(num_eval)
    classifier = train.argmax(1)
    return {
        "train_accuracy": float(train.max(1).sum() / max(train.sum(), 1)),
        "eval_accuracy": float(held[np.arange(len(classifier)), classifier].sum() / max(held.sum(), 1)),
        "active_dims": int(active.sum()),
    }


@style.styled
def heatmap(matrix: np.ndarray, factor_names: list[str], path: Path, title: str) -> Path:
    """A code-dimension × factor heat map (normalised mutual information), PNG and PDF."""
    fig, axes = style.figure(1, 1, panel=(1.6 + 0.75 * matrix.shape[1], 1.1 + 0.24 * matrix.shape[0]))
    ax = axes[0, 0]
    image = ax.imshow(matrix, aspect="auto", cmap=style.SEQUENTIAL, vmin=0, vmax=max(1.0, float(matrix.max())))
    ax.set_xticks(range(matrix.shape[1]), factor_names, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), [f"z{d}" for d in range(matrix.shape[0])])
    ax.set_xlabel("generative factor")
    ax.set_ylabel("code dimension")
    ax.grid(False)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.05, label="normalised mutual information")
    return style.save(fig, path)


class DisentanglementTask(EvalTask):
    """``eval/mig``, ``eval/dci_*``, ``eval/sap`` and ``eval/factorvae_score`` of the codes (see the module docstring).

    Args:
        num_train: training images whose codes fit the DCI and SAP classifiers and give the FactorVAE votes.
        num_test: test images that score the classifiers and the MIG.
        bins: equal-width bins per code dimension for the mutual information (MIG).
        dci_estimators: boosting rounds of each DCI classifier (disentanglement_lib: 100).
        factorvae_batch: images per FactorVAE vote; factorvae_votes / factorvae_eval_votes: votes to fit and to score.
        seed: of the classifiers and the votes.
    """

    name = "disentanglement"
    needs = ("factors",)

    def __init__(
        self,
        num_train: PositiveInt = 5000,
        num_test: PositiveInt = 2000,
        bins: PositiveInt = 20,
        dci_estimators: PositiveInt = 100,
        factorvae_batch: PositiveInt = 64,
        factorvae_votes: PositiveInt = 10000,
        factorvae_eval_votes: PositiveInt = 5000,
        seed: int = 0,
    ):
        check_arguments(DisentanglementTask, locals(), "eval.disentanglement")
        self.num_train, self.num_test, self.bins = int(num_train), int(num_test), int(bins)
        self.dci_estimators, self.factorvae_batch = int(dci_estimators), int(factorvae_batch)
        self.factorvae_votes, self.factorvae_eval_votes, self.seed = (
            int(factorvae_votes),
            int(factorvae_eval_votes),
            int(seed),
        )

    def metric_info(self) -> list[MetricInfo]:
        return [
            MetricInfo("eval/mig", "MIG", True, None, True),
            MetricInfo("eval/dci_disentanglement", "DCI disentanglement", True, None, True),
            MetricInfo("eval/dci_completeness", "DCI completeness", True, None, False),
            MetricInfo("eval/dci_informativeness", "DCI informativeness (accuracy)", True, None, False),
            MetricInfo("eval/sap", "SAP score", True, None, True),
            MetricInfo("eval/factorvae_score", "FactorVAE score", True, None, True),
        ]

    def scores(
        self, train_codes, train_factors, test_codes, test_factors
    ) -> tuple[dict[str, float], dict[str, object]]:
        """The metrics and their matrices from codes and factors (numpy arrays)."""
        mig_value, mi = mig(test_codes, test_factors, self.bins)
        dci_values = dci(train_codes, train_factors, test_codes, test_factors, self.dci_estimators, self.seed)
        sap_value, sap_matrix = sap(train_codes, train_factors, test_codes, test_factors)
        fvae = factor_vae_score(
            train_codes, train_factors, self.factorvae_batch, self.factorvae_votes, self.factorvae_eval_votes, self.seed
        )
        metrics = {
            "eval/mig": mig_value,
            "eval/dci_disentanglement": dci_values["disentanglement"],
            "eval/dci_completeness": dci_values["completeness"],
            "eval/dci_informativeness": dci_values["informativeness"],
            "eval/sap": sap_value,
            "eval/factorvae_score": fvae["eval_accuracy"],
        }
        entropy = np.maximum(factor_entropy(test_factors), 1e-12)
        details = {
            "normalised_mi": (mi / entropy).round(4).tolist(),
            "dci_importance": np.round(dci_values["importance"], 4).tolist(),
            "sap_accuracy": sap_matrix.round(4).tolist(),
            "factorvae_train_accuracy": fvae["train_accuracy"],
            "factorvae_active_dims": fvae["active_dims"],
        }
        return metrics, details

    def run(self, run, out_dir: Path) -> EvalResult:
        model, dm = run.model, run.data

        def encode(split: str, limit: int):
            out = map_batches(
                dm.batches(split, limit=limit, device=model.device),
                lambda b: {"z": model.encode(b["image"]), "f": b["factors"]},
                limit,
            )
            return out["z"].double().numpy(), out["f"].numpy()

        train_codes, train_factors = encode("train", self.num_train)
        test_codes, test_factors = encode("test", self.num_test)
        metrics, details = self.scores(train_codes, train_factors, test_codes, test_factors)
        names = list(dm.factor_names)
        details.update({"factors": names, "train_codes": int(len(train_codes)), "test_codes": int(len(test_codes))})
        path = heatmap(
            np.array(details["normalised_mi"]),
            names,
            out_dir / "disentanglement_mi.png",
            f"MI(code, factor) / H(factor) — MIG {metrics['eval/mig']:.3f}",
        )
        return EvalResult(metrics, details, {"mi_heatmap": path})
