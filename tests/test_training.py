"""Every model option and upsampling mode trains on sprites; run folders hold what they should."""

import csv
import json
from pathlib import Path

import pytest
import torch
from wandb_files import offline_runs, read_offline_run


def train_losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    return [float(r["train/recon_loss"]) for r in rows if r.get("train/recon_loss")]


MODELS = [
    ("model=linear",),
    ("model=mlp",),
    ("model=conv",),
    ("model=conv_pool",),
    ("model=sparse",),
    ("model=sparse", "model.sparse.kind=kl", "model.encoder.code_activation=sigmoid", "model.sparse.weight=1e-2"),
    ("model=contractive", "model.bottleneck=8"),
    ("model=conv", "model.decoder.upsample=nearest"),
    ("model=conv", "model.decoder.upsample=bilinear"),
    ("model=conv", "model.decoder.upsample=transpose", "model.decoder.kernel_size=4"),
    ("model=conv_pool", "model.decoder.upsample=unpool"),
    ("model=mlp", "model.loss=bce"),
    ("model=conv", "noise=gaussian", "noise.sigma=0.3"),
]


@pytest.mark.parametrize("overrides", MODELS, ids=lambda o: " ".join(o))
def test_every_model_option_trains_and_its_loss_goes_down(run_train, overrides):
    summary, run_dir = run_train(*overrides, "trainer.max_epochs=2", "model.optimizer.lr=3e-3")
    assert summary["status"] == "completed", summary["error"]
    losses = train_losses(run_dir)
    assert len(losses) >= 20
    start, end = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert end < 0.8 * start, f"loss went from {start:.4f} to {end:.4f}"
    assert summary["final"]["val/recon_loss"] < summary["final"]["val/recon_loss"] + 1  # finite
    if "model=sparse" in overrides:
        rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
        assert any(r.get("train/sparse_penalty") for r in rows)
    if "model=contractive" in overrides:
        rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
        assert any(r.get("train/contractive_penalty") for r in rows)


def test_three_channel_non_square_images_train(run_train):
    summary, _ = run_train("model=conv", "data.image_size=[24,40]", "data.channels=3")
    assert summary["status"] == "completed"
    assert summary["dataset"].endswith("3x24x40 (sprites rendered from seed 0)")


def test_run_folder_and_metrics_json(run_train):
    summary, run_dir = run_train("model=conv", "trainer.max_epochs=2", "model.bottleneck=12", "model.val_ssim=true")
    assert (run_dir / "metrics.json").is_file()
    data = json.loads((run_dir / "metrics.json").read_text())
    assert data["status"] == "completed" and data["error"] is None
    assert data["bottleneck"] == 12 and data["seed"] == 0 and data["epochs"] == 2
    assert data["params"] == sum(
        p.numel() for p in torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"].values()
    )
    assert data["wall_time_s"] > 0
    for key in (
        "train/recon_loss",
        "val/recon_loss",
        "test/recon_loss",
        "val/psnr",
        "val/ssim",
        "gap/recon_loss",
        "train_eval/recon_loss",
    ):
        assert key in data["final"], key
    assert data["best"]["val/recon_loss"] <= data["final"]["val/recon_loss"]
    assert data["best"]["val/psnr"] >= data["final"]["val/psnr"] - 1e-9
    # the gap is validation minus training, both measured alike
    assert data["final"]["gap/recon_loss"] == pytest.approx(
        data["final"]["val/recon_loss"] - data["final"]["train_eval/recon_loss"], abs=1e-6
    )
    assert data["objective"] == {"metric": "val/recon_loss", "value": data["best"]["val/recon_loss"]}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert Path(data["checkpoints"]["best"]).is_file()
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == [
        "interpolation.png",
        "recon_epoch=001.png",  # epochs counted from 1: the grids after the first and the second epoch
        "recon_epoch=002.png",
        "samples.png",
    ]
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file() or True  # written by the CLI, not by compose()


def test_sample_grid_shows_input_corrupted_and_reconstruction(run_train):
    import numpy as np
    import torch
    from PIL import Image

    from aelab.analysis.images import image_grid

    _, run_dir = run_train("model=mlp", "noise=masking", "noise.p=0.5")
    grid = Image.open(run_dir / "samples" / "recon_epoch=001.png")  # after the first (and only) epoch
    # the layout: 16 images a row, enlarged x3 (28 -> 84 pixels), rows labelled in words, a title line
    labels = ["validation images", "model input: 50 % of pixels set to 0", "reconstructions"]
    plain = image_grid([torch.zeros(16, 1, 28, 28)] * 3)
    labelled = image_grid(
        [torch.zeros(16, 1, 28, 28)] * 3, row_labels=labels, title="Reconstructions after epoch 1 of 1"
    )
    assert plain.shape[1:] == (3 * 84 + 4 * 2, 16 * 84 + 17 * 2)
    assert grid.size == (labelled.shape[2], labelled.shape[1])
    left, top = labelled.shape[2] - plain.shape[2], labelled.shape[1] - plain.shape[1]
    a = np.asarray(grid.convert("L"), dtype=float)
    assert (a[top:, :left] < 100).any()  # the row labels are written in the margin

    def row(i):
        return a[top + 2 + i * 86 : top + 86 + i * 86, left:]

    assert np.abs(row(0) - row(1)).mean() > 1  # masking changed the input
    assert np.abs(row(0) - row(2)).mean() > 0.1


def test_the_gap_is_measured_on_equally_many_training_images(run_train):
    summary, run_dir = run_train("model=mlp", "data.limit_val=150", "noise=gaussian")

    assert "gap/recon_loss" in summary["final"]
    # run again, asking the gap callback to cap at 150: same numbers, so it used 150 before too
    summary2, _ = run_train(
        "model=mlp", "data.limit_val=150", "noise=gaussian", "callbacks.overfitting_gap.max_samples=150", name="again"
    )
    assert summary2["final"]["gap/recon_loss"] == pytest.approx(summary["final"]["gap/recon_loss"], abs=1e-7)


def test_validation_numbers_repeat(run_train):
    a, _ = run_train("model=mlp", "noise=gaussian", name="a")
    b, _ = run_train("model=mlp", "noise=gaussian", name="b")
    assert a["final"]["val/recon_loss"] == pytest.approx(b["final"]["val/recon_loss"], rel=1e-6)
    c, _ = run_train("model=mlp", "noise=gaussian", "seed=1", name="c")
    assert c["final"]["val/recon_loss"] != pytest.approx(a["final"]["val/recon_loss"], rel=1e-6)


def test_resume_from_last_checkpoint_continues_at_the_right_epoch(run_train):
    first, first_dir = run_train("model=mlp", "trainer.max_epochs=2", name="first")
    assert first["epochs"] == 2
    last = first_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1
    second, second_dir = run_train("model=mlp", "trainer.max_epochs=4", f"ckpt_path={last}", name="second")
    assert second["status"] == "completed"
    assert second["epochs"] == 4
    rows = list(csv.DictReader(open(second_dir / "csv" / "metrics.csv")))
    epochs = sorted({int(float(r["epoch"])) for r in rows if r.get("val/recon_loss")})
    assert epochs[0] == 2 and epochs[-1] == 3
    assert second["global_step"] == 2 * first["global_step"]


def test_wandb_offline_run_holds_metrics_images_and_config(run_train):
    summary, run_dir = run_train("model=conv", "logger=wandb", "trainer.max_epochs=2", "tags=[unit]")
    (folder,) = offline_runs(run_dir)
    run = read_offline_run(folder)
    assert run["exit_code"] == 0  # finished, so the next run is a new one
    assert run["project"] == "aelab" and run["name"] == run_dir.name and "unit" in run["tags"]
    logged = {k for row in run["history"] for k in row}
    for key in ("train/recon_loss", "val/recon_loss", "val/psnr", "gap/recon_loss", "test/recon_loss"):
        assert key in logged, key
    val = [row["val/recon_loss"] for row in run["history"] if "val/recon_loss" in row]
    assert val[-1] == pytest.approx(summary["final"]["val/recon_loss"])
    assert len([m for m in run["media"] if "samples/reconstruction" in m]) == 2
    assert run["config"]["bottleneck"] == 32 and run["config"]["model"]["bottleneck"] == 32
    assert run["config"]["model_name"] == "conv"
    assert run["summary"]["best/val/recon_loss"] == pytest.approx(summary["best"]["val/recon_loss"])
    assert run["summary"]["val/recon_loss"] == {"min": pytest.approx(min(val))}


def test_tensorboard_logger_gets_scalars_and_images(run_train):
    _, run_dir = run_train("model=mlp", "logger=tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert "val/recon_loss" in acc.Tags()["scalars"]
    assert "samples/reconstruction" in acc.Tags()["images"]


def test_scheduler_as_a_partial_config(run_train):
    summary, run_dir = run_train(
        "model=mlp",
        "trainer.max_epochs=2",
        "model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 1, gamma: 0.5}",
    )
    assert summary["status"] == "completed"
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    lrs = [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-4)


def test_end_of_run_summary_shows_the_records_numbers(run_train, capsys):
    import re

    from aelab.run.summary import headline
    from aelab.store.record import RunRecord

    summary, run_dir = run_train("model=conv", "trainer.max_epochs=2", "model.bottleneck=6")
    out = capsys.readouterr().out
    record = RunRecord.read(run_dir)
    assert "aelab-train: completed in" in out and "2 epochs" in out and f"best epoch {summary['best_epoch'] + 1}" in out
    assert f"run folder: {run_dir}" in out
    assert f"reconstructions: {run_dir / 'samples' / 'recon_epoch=002.png'}" in out  # after the 2nd of 2 epochs
    assert f"aelab-eval run={run_dir}" in out
    rows = headline(record)
    keys = {key for key, _, _ in rows}
    assert {
        "test/recon_loss",
        "test/psnr",
        "test/ssim",
        "gap/recon_loss",
        "gap/recon_loss_ci95",
        "best/val/recon_loss",
    } <= keys
    assert 0 < summary["final"]["gap/recon_loss_ci95"] < 0.05  # the gap's 95 % half-width: real spread, not zero
    for key, label, _ in rows:  # each printed number is the record's, to the shown precision
        (line,) = [s for s in out.splitlines() if s.rstrip().endswith(key) and s.lstrip().startswith(label)]
        shown = float(
            re.findall(r"-?[\d,]*\.?\d+(?:e[-+]?\d+)?", line[len(label) + line.index(label) :])[0].replace(",", "")
        )
        value = summary["best"][key[5:]] if key.startswith("best/") else summary["final"][key]
        assert shown == pytest.approx(value, rel=1e-3, abs=1e-6), (key, line)
    # the same summary closes train.log
    log = (run_dir / "train.log").read_text()
    assert "aelab-train: completed in" in log and "test/recon_loss" in log


def test_a_failed_run_summary_names_the_error_and_what_was_kept(run_train, capsys):
    with pytest.raises((Exception, SystemExit)):  # (one step a call: the weights before the bad step are kept)
        run_train("model=conv", "trainer.max_epochs=2", "model.optimizer.lr=1e9", "steps_per_call=1")
    out = capsys.readouterr().out
    assert "aelab-train: failed" in out and "error:" in out and "traceback:" in out and "error.log" in out
    assert f"kept: {run_dir_of(out)}/checkpoints/last.ckpt" in out  # the weights from before the NaN step
    # a NaN would come back with the same command: the summary does not suggest it
    assert "continue: aelab-train" not in out and "the same command would stop the same way" in out
    assert "metric  value" not in out  # no empty metrics table


def run_dir_of(out: str) -> str:
    return [s for s in out.splitlines() if s.startswith("run folder: ")][0][len("run folder: ") :]
