"""aelab-eval: the metrics' correctness checks, the tasks on trained runs, and the bad folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from torch import nn
from wandb_files import offline_runs, read_offline_run

from aelab.errors import ConfigError, RunFolderError
from aelab.evaluation.anomaly import auroc
from aelab.evaluation.artifacts import FLAG_DB, checkerboard_score


def test_auroc_of_a_perfect_and_a_reversed_score():
    labels = np.array([0, 0, 0, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auroc(labels, score) == 1.0
    assert auroc(labels, -score) == 0.0


def all_ones(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.ones_(p) if p.dim() > 1 else nn.init.zeros_(p)
    return module


def upsample_ones(module: nn.Module, size: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return all_ones(module)(torch.ones(1, 1, size, size))


def test_transposed_conv_3_2_gives_4_to_1_interior_and_is_flagged():
    out = upsample_ones(nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False))
    interior = out[0, 0, 2:-2, 2:-2]
    assert interior.max() / interior.min() == 4.0
    assert set(interior.unique().tolist()) == {1.0, 2.0, 4.0}
    assert checkerboard_score(out) > FLAG_DB + 10


@pytest.mark.parametrize(
    "module",
    [
        nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1, bias=False),  # even overlap
        nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(1, 1, 3, padding=1, bias=False)),
    ],
    ids=["transpose_k4_s2", "nearest_conv"],
)
def test_even_overlap_and_resize_conv_are_not_flagged(module):
    out = upsample_ones(module)
    interior = out[0, 0, 2:-2, 2:-2]
    assert interior.max() == interior.min()  # flat interior
    assert checkerboard_score(out) < FLAG_DB


def test_checkerboard_score_of_natural_images_is_low():
    from aelab.data import Sprites

    dm = Sprites(num_train=300, num_test=100, val_size=50)
    dm.setup()
    x = dm.images("test")
    assert abs(checkerboard_score(x, (2, 4))) < FLAG_DB


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A conv AE, a denoising conv AE and a VAE trained briefly on sprites (complete run folders)."""
    from conftest import train_run_folder

    root = tmp_path_factory.mktemp("eval_runs")
    base = [o for o in TINY if not o.startswith("trainer.max_epochs")] + [
        "data.num_train=3000",
        "data.val_size=300",
        "model.bottleneck=16",
    ]
    runs = {}
    for name, extra in {
        "ae": ["model=conv", "trainer.max_epochs=4"],
        "dae": ["model=conv", "noise=gaussian", "noise.sigma=0.3", "trainer.max_epochs=8"],
        "vae": ["model=vae", "model.bottleneck=8", "model.iwae_samples=10", "logger=wandb", "trainer.max_epochs=4"],
    }.items():
        runs[name] = train_run_folder(root / name, [*base, *extra])
        assert json.loads((runs[name] / "metrics.json").read_text())["status"] == "completed"
    return runs


def test_probe_on_sprites_codes_predicts_the_shape_above_chance(trained_runs):
    from aelab.evaluation.features import ProbeTask
    from aelab.run.load import load_run

    run = load_run(trained_runs["ae"])
    result = ProbeTask(num_train=2000, knn_k=5).run(run, trained_runs["ae"] / "eval")
    chance = result.metrics["eval/chance_acc"]
    assert chance < 0.4
    # 1000 test images: chance accuracy has a standard error of about 0.015, so +0.08 is > 5 errors away
    assert result.metrics["eval/probe_acc"] > chance + 0.08
    assert result.metrics["eval/knn_acc"] > chance + 0.08
    assert Path(result.files["codes_scatter"]).is_file()


def test_noisy_input_psnr_at_sigma_0_1_without_clipping_is_about_20_db(trained_runs):
    from aelab.evaluation.denoising import DenoiseTask
    from aelab.run.load import load_run

    run = load_run(trained_runs["ae"])
    levels = [{"kind": "gaussian", "sigma": 0.1, "clip": False}]
    result = DenoiseTask(levels=levels, num_images=500).run(run, trained_runs["ae"] / "eval")
    assert result.metrics["eval/denoise/gaussian_0.1/psnr_input"] == pytest.approx(20.0, abs=0.2)


def test_a_short_denoising_run_beats_its_noisy_baseline(trained_runs):
    from aelab.evaluation.denoising import DenoiseTask
    from aelab.run.load import load_run

    run = load_run(trained_runs["dae"])
    levels = [{"kind": "gaussian", "sigma": 0.3, "clip": True}, {"kind": "masking", "p": 0.25}]
    result = DenoiseTask(levels=levels, num_images=500).run(run, trained_runs["dae"] / "eval")
    m = result.metrics
    assert m["eval/denoise/gaussian_0.3/psnr"] > m["eval/denoise/gaussian_0.3/psnr_input"] + 3
    assert m["eval/denoise/gaussian_0.3/ssim"] > m["eval/denoise/gaussian_0.3/ssim_input"]
    assert Path(result.files["gaussian_0.3"]).is_file()


@pytest.mark.slow  # aelab-eval and aelab-compare as subprocesses, about 25 s
def test_aelab_eval_writes_metrics_json_wandb_and_compare(trained_runs, cli):
    run_dir = trained_runs["vae"]
    before = len(offline_runs(run_dir))
    result = cli(
        f"run={run_dir}",
        "eval=[probe,artifacts,generation,nll]",
        "eval.nll.samples=50",
        "eval.nll.num_images=200",
        "eval.probe.num_train=1000",
        tool="aelab-eval",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("eval/probe_acc", "eval/knn_acc", "eval/checkerboard", "eval/checkerboard_init", "eval/nll_iwae"):
        assert key in metrics["final"] and key in metrics["eval"]["metrics"], key
    assert metrics["status"] == "completed"
    # the same W&B run, resumed: a new offline segment with the run's id holds the evaluation
    segments = offline_runs(run_dir)
    assert len(segments) == before + 1
    first, last = read_offline_run(segments[0]), read_offline_run(segments[-1])
    assert first["run_id"] == last["run_id"]
    assert last["summary"]["eval/probe_acc"] == pytest.approx(metrics["final"]["eval/probe_acc"])
    # aelab-compare tabulates the evaluation like any metric
    from aelab.analysis.compare import compare

    table = compare([run_dir]).summary
    assert table["eval/probe_acc"].iloc[0] == pytest.approx(metrics["final"]["eval/probe_acc"])


def test_one_class_training_with_anomaly_evaluation_at_the_end(run_train):
    summary, run_dir = run_train("model=conv", "data.normal_class=1", "trainer.max_epochs=3", "eval=[anomaly]")
    assert summary["status"] == "completed"
    assert 0.5 < summary["final"]["eval/auroc"] <= 1.0
    assert summary["eval"]["details"]["anomaly"]["normal_class"] == 1
    assert 0 < summary["final"]["eval/ap"] <= 1


def test_evaluations_on_missing_or_incompatible_runs_give_clear_messages(trained_runs, tmp_path, cli):
    from aelab.cli.evaluate import evaluate_path
    from aelab.evaluation.anomaly import AnomalyTask
    from aelab.evaluation.likelihood import NLLTask
    from aelab.evaluation.task import run_tasks
    from aelab.run.load import load_run

    with pytest.raises(RunFolderError, match="does not exist"):
        evaluate_path(tmp_path / "missing", {})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFolderError, match="holds no aelab runs"):
        evaluate_path(empty, {})
    run = load_run(trained_runs["ae"])
    with pytest.raises(ConfigError, match="needs a model with 'iwae' \\(a VAE\\)"):
        run_tasks(run, {"nll": NLLTask()}, tmp_path)
    with pytest.raises(ConfigError, match="one-class run"):
        run_tasks(run, {"anomaly": AnomalyTask()}, tmp_path)
    with pytest.raises(ConfigError, match="needs a model with 'elbo' \\(a VAE\\)"):
        run_tasks(run, {"anomaly": AnomalyTask(normal_class=0, scores=["elbo"])}, tmp_path)
    # a run folder without checkpoints
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_runs["ae"], broken, ignore=shutil.ignore_patterns("checkpoints"))
    result = cli(f"run={broken}", "eval=[probe]", tool="aelab-eval")
    assert result.returncode != 0
    assert "has no checkpoint" in result.stderr and "Traceback" not in result.stderr
    result = cli(f"run={trained_runs['ae']}", "eval=[nope]", tool="aelab-eval")
    assert "Could not load 'eval/nope'" in result.stderr and "Traceback" not in result.stderr
