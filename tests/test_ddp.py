"""DDP that works with Hydra and W&B: 2 CPU processes (gloo) here, GPU tests where a GPU is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY
from wandb_files import offline_runs

# Noise-free, so a 2-process run and a 1-process run take exactly the same steps.
SAME_STEPS = [*TINY, "model=conv", "trainer.max_epochs=2", "data.eval_batch_size=64"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow  # two processes, two runs: ~50 s of CPU; CI runs it
def test_ddp_cpu_one_folder_one_wandb_run_and_the_metrics_of_one_process(cli, tmp_path):
    ddp = cli(*SAME_STEPS, "trainer=ddp_cpu", "data.batch_size=32", "logger=wandb", "name=ddp", timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    one = cli(*SAME_STEPS, "trainer=cpu", "data.batch_size=64", "name=one")
    assert one.returncode == 0, one.stderr[-3000:]

    runs = tmp_path / "outputs" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "one"]  # no extra folder per rank
    run_dir = runs / "ddp"
    a, b = metrics(runs / "one"), metrics(run_dir)
    assert b["status"] == "completed" and b["world_size"] == 2 and a["world_size"] == 1
    assert a["global_step"] == b["global_step"]
    # 2 processes x batch 32 take the steps of 1 process x batch 64; evaluation is synced over both ranks
    for key in (
        "val/recon_loss",
        "gap/recon_loss",
        "train_eval/recon_loss",
        "test/recon_loss",
        "val/psnr",
        "test/ssim",
    ):
        assert b["final"][key] == pytest.approx(a["final"][key], rel=1e-4, abs=1e-6), key

    assert len(offline_runs(run_dir)) == 1  # one W&B run, from rank 0
    assert not (run_dir / "train_ddp_process_1").exists()
    assert not list(run_dir.glob("**/.hydra/config.yaml"))[1:], "one composed config"
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == sorted(p.name for p in (runs / "one" / "checkpoints").iterdir())  # same files, written once
    assert (run_dir / "samples" / "recon_epoch=001.png").is_file()


def test_local_multirun_with_ddp_is_refused_up_front(cli, tmp_path):
    result = cli("-m", *TINY, "trainer=ddp_cpu", "model.bottleneck=4,8")
    assert result.returncode != 0
    assert "cannot run DDP jobs" in result.stderr and "submitit_slurm" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "sweeps").exists() or not list(
        (tmp_path / "outputs" / "sweeps").glob("*/*/metrics.json")
    )


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")


@needs_gpu
def test_gpu_run_keeps_the_dataset_on_the_gpu(run_train):
    summary, _ = run_train("trainer=gpu", "trainer.precision=bf16-mixed", "model=conv", "noise=gaussian")
    assert summary["status"] == "completed"


@needs_gpu
def test_datamodule_slices_batches_on_the_gpu():
    import lightning as L

    from aelab.data import Sprites

    dm = Sprites(num_train=500, num_test=100, val_size=100, batch_size=50)
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, enable_checkpointing=False)
    dm.trainer = trainer
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].is_cuda and batch["image"].dtype == torch.uint8


@needs_two_gpus
def test_ddp_on_two_gpus(cli, tmp_path):
    result = cli(*SAME_STEPS, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=gpu", "name=gpus")
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(tmp_path / "outputs" / "runs" / "gpus")["world_size"] == 2


def test_bf16_mixed_precision_trains_on_cpu(run_train):
    summary, _ = run_train("model=conv", "trainer.precision=bf16-mixed", "data.limit_train=256")
    assert summary["status"] == "completed"
    assert summary["final"]["val/recon_loss"] < 0.2


@pytest.mark.slow
def test_compile_keeps_checkpoint_names_and_trains(run_train):
    summary, run_dir = run_train("model=mlp", "compile=true", "data.limit_train=256")
    assert summary["status"] == "completed"
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in k for k in state)  # compiled in place: a plain model loads these weights
