"""The disentanglement metrics are validated on codes whose answer is known: the factors themselves score
near 1, a random rotation of them far lower, random codes near 0 — and the task runs on a sprites run."""

import json

import numpy as np
import pytest
from conftest import run_cli

from aelab.evaluation.disentanglement import DisentanglementTask

SIZES = (3, 6, 8, 5)


def factors(n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(s, size=n) for s in SIZES], axis=1)


def as_codes(f, seed, noise=0.01):
    rng = np.random.default_rng(seed)
    scaled = f / (np.array(SIZES) - 1)  # each factor in [0, 1]
    return scaled + noise * rng.standard_normal(f.shape)


@pytest.fixture(scope="module")
def scored():
    task = DisentanglementTask(dci_estimators=20, factorvae_votes=800, factorvae_eval_votes=400)
    f_train, f_test = factors(1500, 0), factors(800, 1)
    rotation = np.linalg.qr(np.random.default_rng(2).standard_normal((len(SIZES), len(SIZES))))[0]
    cases = {
        "factors": (as_codes(f_train, 3), as_codes(f_test, 4)),
        "rotated": (as_codes(f_train, 3) @ rotation, as_codes(f_test, 4) @ rotation),
        "random": (
            np.random.default_rng(5).standard_normal((1500, 4)),
            np.random.default_rng(6).standard_normal((800, 4)),
        ),
    }
    return {name: task.scores(train, f_train, test, f_test)[0] for name, (train, test) in cases.items()}


def test_the_true_factors_score_near_one(scored):
    s = scored["factors"]
    assert s["eval/mig"] > 0.9 and s["eval/dci_disentanglement"] > 0.9 and s["eval/dci_completeness"] > 0.9, s
    assert s["eval/dci_informativeness"] > 0.95 and s["eval/factorvae_score"] > 0.95 and s["eval/sap"] > 0.2, (
        s
    )  # a 1-D linear SVM cannot separate 8 classes: SAP stays below 1 even here


def test_a_random_rotation_of_the_factors_scores_far_lower(scored):
    true, rotated = scored["factors"], scored["rotated"]
    for key in ("eval/mig", "eval/dci_disentanglement", "eval/sap"):
        assert rotated[key] < 0.6 * true[key], (key, true[key], rotated[key])
    # the information is all still there: a rotation loses none of it
    assert rotated["eval/dci_informativeness"] > 0.8


def test_random_codes_score_near_zero(scored):
    s = scored["random"]
    assert s["eval/mig"] < 0.05 and s["eval/sap"] < 0.05 and s["eval/dci_disentanglement"] < 0.25, s
    assert s["eval/factorvae_score"] < 0.5  # four factors: chance is about 1/4 of the votes' factor


def test_the_disentanglement_task_runs_on_a_sprites_run_and_writes_its_numbers(tmp_path):
    run_dir = tmp_path / "tc"
    result = run_cli(
        [
            "model=tcvae",
            "model.bottleneck=5",
            "data=sprites",
            "data.num_train=1500",
            "data.val_size=300",
            "data.num_test=300",
            "trainer.max_epochs=1",
            "model.iwae_samples=0",
            "eval=[disentanglement]",
            "eval.disentanglement.num_train=1000",
            "eval.disentanglement.dci_estimators=5",
            "eval.disentanglement.factorvae_votes=300",
            "eval.disentanglement.factorvae_eval_votes=200",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    final = record["final"]
    for key in ("eval/mig", "eval/dci_disentanglement", "eval/dci_completeness", "eval/sap", "eval/factorvae_score"):
        assert 0.0 <= final[key] <= 1.0, (key, final[key])
    assert (run_dir / "eval" / "disentanglement_mi.png").is_file()
    assert "MIG" in result.stdout + result.stderr  # the end-of-run summary names it


def test_a_dataset_without_factors_is_refused_before_training(tmp_path):
    result = run_cli(["model=mlp", "data=fashion_mnist", "eval=[disentanglement]", "trainer.max_epochs=1"], tmp_path)
    assert result.returncode != 0
    assert "known generating factors" in result.stderr
