"""The quick variants of the ablations that run in CI (slow), and the results writer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, needs_fashion_mnist, run_cli


def run_ablation(name: str, root: Path, *extra: str) -> Path:
    env = dict(os.environ, AELAB_ROOT=str(root), WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_ablation.py"), name, *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = root / "outputs" / "sweeps" / f"{name}_quick"
    assert (sweep / "ablation.json").is_file() and (sweep / "comparison" / "report.md").is_file()
    return sweep


def job_metrics(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_linear_vs_pca_the_linear_autoencoder_approaches_pca(tmp_path):
    sweep = run_ablation("bottleneck_linear_vs_pca", tmp_path)
    jobs = job_metrics(sweep)
    assert len(jobs) == 6 and all(m["status"] == "completed" for m in jobs.values())
    for name, m in jobs.items():
        ratio = m["final"]["eval/recon_vs_pca"]
        assert 0.99 < ratio < 1.1, (name, ratio)  # never below exact PCA, and within 10 % of it
    # and a conv autoencoder beats PCA at bottleneck 32 (the next ablation's claim), on that ablation's quick budget
    result = run_cli(
        [
            "model=conv",
            "model.bottleneck=32",
            "data.limit_train=30000",
            "trainer.max_epochs=4",
            "model.optimizer.lr=2e-3",
            "eval=[pca]",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={tmp_path / 'conv32'}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    conv = json.loads((tmp_path / "conv32" / "metrics.json").read_text())["final"]
    assert conv["eval/model_test_mse"] < conv["eval/pca_recon_loss"], conv


@pytest.mark.slow
@needs_fashion_mnist
def test_quick_upsampling_transpose_convolution_has_the_highest_checkerboard_score(tmp_path):
    sweep = run_ablation("upsampling", tmp_path)
    jobs = {m["overrides"] and name.split(",")[0].split("=")[1]: m for name, m in job_metrics(sweep).items()}
    assert set(jobs) == {"transpose", "nearest", "bilinear", "unpool"}
    init = {k: m["final"]["eval/checkerboard_init"] for k, m in jobs.items()}
    trained = {k: m["final"]["eval/checkerboard"] for k, m in jobs.items()}
    # the stride-2 transposed convolution (uneven overlap) has the highest checkerboard score, flagged
    assert max(init, key=init.get) == "transpose", init
    assert init["transpose"] > 3.0 and init["nearest"] < 3.0 and init["bilinear"] < 3.0, init
    # an MSE objective penalises the pattern directly: training removes most of it
    assert trained["transpose"] < init["transpose"] - 5, (init, trained)
    assert all(m["final"]["test/recon_loss"] < 0.05 for m in jobs.values())


def test_results_writer_without_sweeps_says_how_to_run_them(tmp_path):
    out = tmp_path / "results.md"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "write_results.py"),
            "--outputs",
            str(tmp_path / "none"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert text.count("_Not run yet._") == 10
    assert "python scripts/run_ablation.py upsampling" in text
    assert "python scripts/run_ablation.py bottleneck_overfitting" in text


def test_results_writer_keeps_the_sections_whose_sweeps_ran_elsewhere(tmp_path):
    out = tmp_path / "results.md"
    out.write_text(
        "# Results\n\n## 3. Decoder upsampling (`upsampling`)\n\n**Result.** Held: measured on another machine.\n\n"
        "## 4. Denoising autoencoders (`denoising`)\n\n_Not run yet._ Run it.\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "write_results.py"),
            "--outputs",
            str(tmp_path / "none"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert "Held: measured on another machine." in text  # kept, not replaced by "Not run yet"
    assert "**Kept from an earlier run.**" in text  # and marked as such, with the command that reruns it
    assert "`python scripts/run_ablation.py upsampling`" in text
    assert text.count("_Not run yet._") == 9
