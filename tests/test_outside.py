"""A trained model outside aelab: aelab-predict, ONNX/TorchScript export, and the Python API."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, train_run_folder
from own_data import write_image_folder

SHORT = [*TINY, "trainer.limit_train_batches=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Short runs of each net the export covers, and a one-class run evaluated for anomalies."""
    root = tmp_path_factory.mktemp("outside")
    specs = {
        "transpose": ["model=conv", "model.bottleneck=8"],
        "nearest": ["model=conv", "model.bottleneck=8", "model.decoder.upsample=nearest"],
        "bilinear": ["model=conv", "model.bottleneck=8", "model.decoder.upsample=bilinear"],
        "unpool": ["model=conv_pool", "model.bottleneck=8"],
        "mlp": ["model=mlp", "model.bottleneck=8"],
        "linear": ["model=linear", "model.bottleneck=8"],
        "vae": ["model=vae", "model.bottleneck=4", "model.iwae_samples=0"],
        "oneclass": [
            "model=conv",
            "model.bottleneck=8",
            "data.normal_class=1",
            "eval=[anomaly]",
            "trainer.limit_train_batches=null",
            "trainer.max_epochs=2",
        ],
    }
    out = {}
    for name, extra in specs.items():
        out[name] = train_run_folder(root / name, [*SHORT, *extra])
        assert json.loads((out[name] / "metrics.json").read_text())["status"] == "completed"
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ aelab-predict
def test_predict_on_a_folder_of_pngs_matches_load_run_encode(runs, tmp_path):
    from aelab.data.sprites import make_sprites
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    images, labels, _ = make_sprites(40, 28, 1, 5)
    folder = write_image_folder(
        tmp_path / "pngs", images.numpy(), labels.numpy(), ["square", "ellipse", "heart"], fmt=("png",)
    )
    run = load_run(runs["transpose"])
    result = predict(run, str(folder), tmp_path / "out", progress=False)
    codes = np.load(result["files"]["codes"])
    index = read_csv(result["files"]["index"])
    assert (
        codes.shape == (40, 8) and len(index) == 40 and index[0]["source"].endswith(".png") and index[0]["label"] != ""
    )
    order = [int(Path(r["source"]).stem.split("_")[1]) for r in index]
    assert np.allclose(codes, run.encode(images.numpy()[order]), atol=1e-5)  # the same codes as the Python API
    assert np.load(result["files"]["maps"]).shape == (40, 1, 28, 28)
    assert Path(result["files"]["recon_grid"]).is_file() and Path(result["files"]["maps_grid"]).is_file()


def test_predict_scores_match_aelab_eval_on_the_same_images(runs, tmp_path):
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    run = load_run(runs["oneclass"])
    result = predict(run, "sprites", tmp_path / "out", outputs=["score"], progress=False)
    ours = {r["source"]: float(r["mse"]) for r in read_csv(result["files"]["scores"])}
    theirs = {r["id"]: float(r["mse"]) for r in read_csv(runs["oneclass"] / "eval" / "anomaly_scores.csv")}
    assert ours.keys() == theirs.keys() and len(ours) == 200
    assert max(abs(ours[k] - theirs[k]) for k in ours) < 1e-6


def test_predict_on_an_npz_and_denoise_writes_cleaned_images(runs, tmp_path):
    from aelab.data.sprites import make_sprites
    from aelab.deploy.predict import predict
    from aelab.run.load import load_run

    images, _, _ = make_sprites(12, 28, 1, 3)
    np.savez(tmp_path / "new.npz", x=images.numpy()[:, 0])  # (N, H, W) uint8
    run = load_run(runs["mlp"])
    result = predict(
        run, str(tmp_path / "new.npz"), tmp_path / "out", outputs=["codes", "recon"], denoise=True, progress=False
    )
    assert np.load(result["files"]["recon"]).shape == (12, 1, 28, 28)
    assert len(list(Path(result["files"]["denoised"]).glob("*.png"))) == 12
    assert np.allclose(np.load(result["files"]["codes"]), run.encode(images), atol=1e-5)


@pytest.mark.slow  # a dozen aelab-predict processes, about 40 s
def test_predict_cli_and_its_bad_input(runs, cli, tmp_path):
    result = cli(f"run={runs['mlp']}", "input=sprites", "outputs=[codes,score]", tool="aelab-predict")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (runs["mlp"] / "predict" / "sprites" / "codes.npy").is_file() and "predicted 200 inputs" in result.stdout
    np.save(tmp_path / "vectors.npy", np.zeros((5, 30), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((5, 30), np.float32))
    bad = {
        (f"run={runs['mlp']}", f"input={tmp_path / 'missing'}"): "does not exist",
        (
            f"run={runs['mlp']}",
            "input=sprites",
            "outputs=[codes,thumbnails]",
        ): "outputs=['codes', 'thumbnails'] has the wrong type: expected list of one of "
        "'codes', 'recon', 'score', 'map'",
        (f"run={runs['transpose']}", f"input={tmp_path / 'vectors.npy'}"): "this run takes images [N, 1, 28, 28]",
        (f"run={tmp_path}", "input=sprites"): "is not an aelab run folder",
        ("input=sprites",): "name the run and the inputs",
    }
    for args, message in bad.items():
        result = cli(*args, tool="aelab-predict")
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr[-1500:])
        assert "Traceback" not in result.stderr


def test_vector_length_is_checked_against_the_run(tmp_path, run_train):
    from aelab.errors import ConfigError
    from aelab.run.load import load_run

    np.savez(tmp_path / "table.npz", x=np.random.default_rng(0).random((200, 12)).astype(np.float32))
    train_run_folder(
        tmp_path / "tab",
        [
            *[o for o in SHORT if not o.startswith("data")],
            "data=arrays",
            f"data.path={tmp_path / 'table.npz'}",
            "model=mlp",
            "model.bottleneck=3",
        ],
    )
    run = load_run(tmp_path / "tab")
    assert run.encode(np.random.default_rng(1).random((4, 12)).astype(np.float32)).shape == (4, 3)
    with pytest.raises(
        ConfigError, match=r"this run takes vectors of 12 values, \[N, 12\]; got an input of shape \(4, 10\)"
    ):
        run.encode(np.zeros((4, 10), np.float32))


def test_a_run_folder_without_checkpoints_is_named(runs, tmp_path):
    import shutil

    from aelab.errors import RunFolderError
    from aelab.run.load import load_run

    broken = tmp_path / "broken"
    shutil.copytree(runs["mlp"], broken, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(RunFolderError, match="has no checkpoint"):
        load_run(broken)


# ------------------------------------------------------------------ aelab-export
@pytest.mark.parametrize(
    "name, fmt, part",
    [
        ("transpose", "onnx", "autoencoder"),
        ("nearest", "onnx", "autoencoder"),
        ("bilinear", "onnx", "autoencoder"),
        ("unpool", "onnx", "autoencoder"),
        ("unpool", "torchscript", "decoder"),
        ("mlp", "torchscript", "autoencoder"),
        ("linear", "onnx", "encoder"),
        ("vae", "onnx", "encoder"),
        ("vae", "torchscript", "decoder"),
    ],
)
def test_export_round_trips_within_1e_4_of_pytorch(runs, tmp_path, name, fmt, part):
    from aelab.deploy.export import export
    from aelab.run.load import load_run

    run = load_run(runs[name])
    result = export(run, fmt, part, tmp_path)
    assert result["parity"]["max_abs_diff"] <= 1e-4 and result["parity"]["batches"] == [
        16,
        21,
    ]  # two batch sizes: dynamic
    description = json.loads(Path(result["file"]).with_name(f"{part}.{fmt}.json").read_text())
    if name == "vae" and part == "encoder":
        assert [o["name"] for o in description["outputs"]] == ["mean", "log_variance"]
    if part != "decoder":
        assert (
            description["inputs"][0]["shape"] == ["batch", 1, 28, 28]
            and "divided by 255" in description["preprocessing"]["values"]
        )


@pytest.mark.slow  # subprocess-heavy (~20 s): runs with the slow checks, which CI runs (make test < 5 min)
def test_export_cli_prints_the_parity_and_refuses_bad_options(runs, cli):
    result = cli(f"run={runs['transpose']}", "format=onnx", "part=encoder", tool="aelab-export")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max |difference| =" in result.stdout and (runs["transpose"] / "export" / "encoder.onnx").is_file()
    result = cli(f"run={runs['transpose']}", "format=tflite", tool="aelab-export")
    assert result.returncode != 0
    assert "format='tflite' is not one of ['onnx', 'torchscript', 'safetensors']" in result.stderr


# ------------------------------------------------------------------ the Python API
@pytest.mark.slow  # subprocess-heavy (~20 s): runs with the slow checks, which CI runs (make test < 5 min)
def test_the_notebook_api_in_a_fresh_process_without_a_tty(tmp_path):
    script = f"""
import aelab, numpy as np
run = aelab.train({[*TINY, "model=mlp", "model.bottleneck=4", "name=nb"]!r})
x = run.datamodule().splits["test"].images[:16]
codes, recon, scores = run.encode(x), run.reconstruct(x), run.score(x)
again = aelab.load_run(run.run_dir)
table = aelab.compare([str(run.run_dir)]).summary
same = bool(np.allclose(again.encode(x), codes))
print("RESULT", run.metrics["status"], codes.shape, recon.shape, sorted(scores), same,
      float(table["test/recon_loss"].iloc[0]) == run.metrics["final"]["test/recon_loss"], run.config.model.bottleneck)
try:
    aelab.train(["model.bottleneck=0"])
except aelab.errors.ConfigError as exc:
    print("REFUSED", "model.bottleneck" in str(exc))
"""
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("WANDB_SERVICE", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT completed (16, 4) (16, 1, 28, 28) ['mse'] True True 4" in result.stdout
    assert "REFUSED True" in result.stdout
    assert (tmp_path / "outputs" / "runs" / "nb" / "train.log").is_file()
    assert (tmp_path / "outputs" / "runs" / "nb" / ".hydra" / "config.yaml").is_file()
