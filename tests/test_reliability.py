"""Runs that survive: determinism, atomic and broken files, W&B failures, NaN batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_same_seed_gives_identical_metrics_and_the_seed_is_recorded(run_train):
    args = ("model=conv", "noise=masking", "trainer.max_epochs=2", "data.limit_train=256")
    a, dir_a = run_train(*args, "seed=7", name="a")
    b, _ = run_train(*args, "seed=7", name="b")
    c, _ = run_train(*args, "seed=8", name="c")
    assert a["final"] == b["final"] and a["best"] == b["best"]
    assert a["final"]["val/recon_loss"] != c["final"]["val/recon_loss"]
    assert a["seed"] == 7
    from omegaconf import OmegaConf

    assert OmegaConf.load(dir_a / "csv" / "hparams.yaml").seed == 7  # the config every logger (W&B too) receives


@pytest.mark.slow  # trains, then aelab-compare as a subprocess, about 25 s
def test_truncated_metrics_json_is_reported_by_compare(cli, tmp_path):
    sweep = cli("-m", *TINY, "model=linear", "model.bottleneck=2,4", "data.limit_train=128", "sweep.name=s")
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    sweep_dir = tmp_path / "outputs" / "sweeps" / "s"
    bad = sweep_dir / "model.bottleneck=4" / "metrics.json"
    bad.write_text('{"status": "comple')  # a crash mid-write by some other tool
    result = cli(str(sweep_dir), tool="aelab-compare")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "not included" in result.stdout and "model.bottleneck=4" in result.stdout
    assert (sweep_dir / "comparison" / "comparison.md").is_file()


def test_checkpoints_are_written_atomically(tmp_path):
    from aelab.errors import RunFolderError
    from aelab.store.checkpoints import AtomicCheckpointIO, load_checkpoint

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": Boom()}, path)
    assert load_checkpoint(path)["epoch"] == 1  # the earlier checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind
    path.write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_wandb_failure_never_stops_training(run_train, monkeypatch):
    import wandb.sdk.wandb_run as wandb_run

    def broken_log(self, *args, **kwargs):
        raise ConnectionError("W&B service went away")

    monkeypatch.setattr(wandb_run.Run, "log", broken_log)
    summary, run_dir = run_train("model=linear", "logger=wandb", "trainer.max_epochs=2", "data.limit_train=256")
    assert summary["status"] == "completed"
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/recon_loss" in rows[0] and len(rows) > 5


def test_wandb_that_cannot_start_is_dropped(run_train, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise OSError("cannot create wandb folder")

    monkeypatch.setattr(wandb, "init", broken_init)
    summary, run_dir = run_train("model=linear", "logger=wandb", "data.limit_train=256")
    assert summary["status"] == "completed"
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_nonfinite_batches_can_be_skipped(cli, tmp_path):
    result = cli(
        *TINY,
        "model=linear",
        "trainer.max_epochs=2",
        "model.optimizer._target_=torch.optim.SGD",
        "model.optimizer.lr=1e4",
        "~model.optimizer.weight_decay",
        "nonfinite_loss=skip",
        "name=skip",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "runs" / "skip"
    data = metrics(run_dir)
    assert data["status"] == "completed"
    assert data["final"]["train/skipped_batches"] >= 1
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_wandb_run_id_is_found_in_metrics_or_in_the_folder_names(tmp_path):
    from aelab.store.files import write_json_atomic
    from aelab.store.runs import wandb_run_id

    assert wandb_run_id(tmp_path) is None
    for name in ("offline-run-20261123_051528-u8bsiv6v", "offline-run-20261123_051544-u8bsiv6v-1", "latest-run"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert wandb_run_id(tmp_path) == "u8bsiv6v"  # a resume in the same second adds "-1": not the id
    write_json_atomic(tmp_path / "metrics.json", {"wandb": {"id": "abc123"}})
    assert wandb_run_id(tmp_path) == "abc123"


@pytest.mark.parametrize(
    "fault",
    [
        "truncated",
        "garbage",
        pytest.param("not_gzip", marks=pytest.mark.slow),
        pytest.param("short_header", marks=pytest.mark.slow),
    ],
)
def test_a_broken_idx_file_is_one_line_naming_it(cli, tmp_path, fault):
    import gzip
    import shutil

    real = Path("/usr/share/datasets/fashion-mnist")
    if not real.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for f in real.glob("*.gz"):
        shutil.copy(f, folder / f.name)
    broken = folder / "train-images-idx3-ubyte.gz"
    data = broken.read_bytes()
    if fault == "truncated":
        broken.write_bytes(data[: len(data) // 2])
    elif fault == "garbage":
        broken.write_bytes(b"\x1f\x8b" + b"garbage" * 1000)
    elif fault == "not_gzip":
        broken.write_bytes(b"plain text, not gzip" * 10)
    else:  # a valid gzip stream holding too few bytes for its own header
        broken.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + b"\x00" * 100))
    result = cli("data=fashion_mnist", f"data.root={tmp_path / 'data'}", "model=mlp", "trainer.max_epochs=1", "name=r")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [s for s in result.stderr.splitlines() if s.startswith("aelab-train: error:")]
    assert str(broken) in line


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (needs root and mount rights; skipped elsewhere), unmounted afterwards."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_disk_that_fills_during_the_run_is_named_recorded_and_loses_nothing(small_disk):
    from conftest import run_cli

    # an MLP's last.ckpt (weights + Adam state) is 13 MB, its best checkpoint 4 MB: the second epoch's last.ckpt does
    # not fit
    result = run_cli([*TINY, "model=mlp", "trainer.max_epochs=4", "paths.min_free_mb=0", "name=full"], small_disk)
    assert result.returncode == 1
    run_dir = small_disk / "outputs" / "runs" / "full"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"aelab-train: error: no space left on device while writing {last}" in result.stderr
    assert "Traceback" not in result.stderr
    record = metrics(run_dir)
    assert record["status"] == "failed" and "no space left on device" in record["error"]
    assert "DiskFullError" in (run_dir / "error.log").read_text()
    assert torch.load(last, weights_only=False)["epoch"] == 0  # the last complete checkpoint, readable
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]  # no temporary file left behind


def test_a_model_too_big_for_this_machine_is_refused_before_it_is_built_or_has_a_folder(cli, tmp_path):
    result = cli(*TINY, "model=mlp", "model.bottleneck=100000000", "name=big")  # 51 G parameters: 765 GiB to train
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the model has 51,301.1 M parameters: training needs about 764.4 GiB of memory" in result.stderr
    assert "model.bottleneck" in result.stderr
    assert not (tmp_path / "outputs" / "runs" / "big").exists()  # refused before the run folder was made


def test_sampling_a_code_too_large_for_a_full_covariance_uses_independent_dimensions():
    from functools import partial

    from aelab.models import Autoencoder
    from aelab.nets import MLPDecoder, MLPEncoder

    torch.manual_seed(0)
    model = Autoencoder(
        [1, 8, 8], bottleneck=5000, encoder=partial(MLPEncoder, hidden=[16]), decoder=partial(MLPDecoder, hidden=[16])
    )
    batches = [{"image": torch.rand(32, 1, 8, 8)} for _ in range(2)]  # 64 codes of 5000 dimensions: no full covariance
    images = model.sample(6, seed=1, batches=batches)
    assert images.shape == (6, 1, 8, 8) and torch.isfinite(images).all()
    assert "independent dimensions" in model.sampling
    small = Autoencoder(
        [1, 8, 8], bottleneck=4, encoder=partial(MLPEncoder, hidden=[16]), decoder=partial(MLPDecoder, hidden=[16])
    )
    assert small.sample(3, batches=batches).shape == (3, 1, 8, 8) and "independent" not in small.sampling
