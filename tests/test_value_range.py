"""The data's value range is declared and honoured: [0, 1] data are clamped and get PSNR/SSIM and pictures;
real-valued data (standardized vectors, ``data.normalize=none``) come back unclamped everywhere and get none of
those; a model that cannot reach real values is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, compose_config, run_cli, train_run_folder

from aelab.data import Sprites, datamodule

QUICK = [o for o in TINY if not o.startswith("data")]


def standardized_digits(path: Path) -> Path:
    """scikit-learn's digits, each feature standardized: values well below 0 and above 1."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    np.savez(path, x=x, y=digits.target)
    return path


def real_valued(path: Path, *extra: str) -> list[str]:
    return [
        "data=arrays",
        f"data.path={path}",
        "data.normalize=none",
        "model=mlp",
        "model.bottleneck=8",
        *QUICK,
        *extra,
    ]


@pytest.fixture(autouse=True)
def fresh_loads():
    datamodule._LOADED.clear()
    yield
    datamodule._LOADED.clear()


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    return standardized_digits(tmp_path_factory.mktemp("digits") / "digits.npz")


@pytest.fixture(scope="module")
def run_dir(vectors, tmp_path_factory) -> Path:
    """One real-valued run, trained once for the module: 3 epochs of an MLP with identity outputs."""
    datamodule._LOADED.clear()
    overrides = real_valued(vectors, "model.output_activation=identity", "trainer.max_epochs=3")
    return train_run_folder(tmp_path_factory.mktemp("runs") / "real", overrides)


def unclamped(values) -> bool:
    values = np.asarray(values)
    return bool((values < 0).any() and (values > 1).any())


# ------------------------------------------------------------------ the declaration
def test_datasets_declare_their_value_range(tmp_path):
    from aelab.data import ArrayFile, ImageDataModule, Sprites

    assert Sprites().value_range == "unit"
    for normalize, expected in (("auto", "unit"), ("minmax", "unit"), ("none", "real")):
        assert ArrayFile(path=str(tmp_path / "x.npz"), normalize=normalize).value_range == expected

    class Table(ImageDataModule):  # a user's dataset of real values says so in one line
        value_range = "real"

    assert Table().value_range == "real"


def test_models_without_the_hparam_default_to_unit_and_real_data_drop_psnr_and_ssim():
    from aelab.models import Autoencoder

    old = Autoencoder(input_shape=(1, 8, 8), bottleneck=4)  # a checkpoint's hparams from before value_range
    keys = {m.key for m in old.metric_info()}
    assert old.value_range == "unit" and {"test/psnr", "test/ssim"} <= keys
    real = Autoencoder(input_shape=(1, 8, 8), bottleneck=4, output_activation="identity", value_range="real")
    assert not {k for k in (m.key for m in real.metric_info()) if k.endswith(("psnr", "ssim"))}
    import torch

    z = torch.full((2, 4), 50.0)
    assert old.decode(z).max() <= 1 and real.in_range(torch.tensor([-2.0, 3.0])).tolist() == [-2.0, 3.0]


# ------------------------------------------------------------------ refused before anything is written
@pytest.mark.parametrize(
    "extra, words",
    [
        ([], ["data.normalize=none", "model.output_activation=sigmoid", "use model.output_activation=identity"]),
        (["model.output_activation=identity", "model.loss=bce"], ["data.normalize=none", "model.loss=bce"]),
        (["model=vae"], ["data.normalize=none", "model.likelihood=bernoulli"]),
        (["model.output_activation=identity", "eval=[denoise]"], ["eval.denoise", "data.normalize=none"]),
    ],
)
def test_a_model_that_cannot_reach_real_values_is_refused_by_the_early_check(vectors, tmp_path, extra, words):
    from aelab.config.checks import config_problems

    problems, _ = config_problems(compose_config(tmp_path / "run", real_valued(vectors, *extra)))
    assert len(problems) >= 1 and all("\n" not in p for p in problems), problems
    for word in words:
        assert word in problems[0], problems


def test_sigmoid_with_real_values_is_refused_before_a_run_folder_exists(vectors, tmp_path):
    import aelab
    from aelab.errors import ConfigError

    out = tmp_path / "outputs"
    with pytest.raises(ConfigError, match="data.normalize=none.*model.output_activation=sigmoid"):
        aelab.train([*real_valued(vectors), f"paths.output_dir={out}"])
    assert not out.exists() or not any(out.rglob("metrics.json"))


class RealSprites(Sprites):
    """A dataset whose range only its instance knows (a property: the early check cannot read it)."""

    @property
    def value_range(self):
        return "real"


def test_a_dataset_known_real_only_once_built_is_refused_with_sigmoid_where_the_parts_are_built(tmp_path):
    from aelab.config.checks import config_problems
    from aelab.errors import ConfigError, find_aelab_error
    from aelab.run.parts import build_components

    cfg = compose_config(tmp_path / "run", [*TINY, "model=mlp", f"data._target_={__name__}.RealSprites"])
    assert config_problems(cfg)[0] == []
    with pytest.raises(Exception) as caught:
        build_components(cfg)  # the pre-run step builds the parts before it makes the run folder
    error = find_aelab_error(caught.value)
    assert isinstance(error, ConfigError)
    assert "model.output_activation=sigmoid keeps reconstructions in [0, 1]" in str(error)


# ------------------------------------------------------------------ one real-valued run, every way out
def test_real_valued_run_records_no_image_metrics_and_draws_no_pictures(run_dir):
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed", record["error"]
    assert record["dataset_info"]["value_range"] == "real"
    keys = set(record["final"]) | set(record["best"]) | set(record["metric_info"])
    assert keys and not [k for k in keys if k.endswith(("/psnr", "/ssim"))], keys
    assert "test/recon_loss" in record["final"]
    assert not list(run_dir.rglob("*.png"))  # no reconstruction grid, no samples


def test_real_values_come_back_unclamped_from_load_run_predict_and_every_export(run_dir, vectors, tmp_path):
    import onnxruntime as ort
    import torch

    import aelab
    from aelab.deploy.export import export

    x = np.load(vectors)["x"][:64]
    run = aelab.load_run(run_dir)
    recon = run.reconstruct(x)
    assert unclamped(recon), (recon.min(), recon.max())

    result = run_cli(
        [f"run={run_dir}", f"input={vectors}", f"out={tmp_path / 'predicted'}"], tmp_path, 300, "aelab-predict"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = np.load(tmp_path / "predicted" / "recon.npy")
    assert unclamped(predicted) and not list((tmp_path / "predicted").glob("*.png"))
    np.testing.assert_allclose(predicted[:64], recon, atol=1e-5)  # the same rows: the whole file, unshuffled

    inputs = torch.as_tensor(x)
    for fmt in ("onnx", "torchscript"):
        description = export(run, fmt, "autoencoder", out_dir=tmp_path / "export")
        assert description["output_values"] == "real values, unclamped"
        assert description["parity"]["max_abs_diff"] <= 1e-4
        if fmt == "onnx":
            session = ort.InferenceSession(description["file"], providers=["CPUExecutionProvider"])
            (out,) = session.run(None, {"image": x})
        else:
            out = torch.jit.load(description["file"]).eval()(inputs).detach().numpy()
        assert unclamped(out)
        np.testing.assert_allclose(out, recon, atol=1e-4)
    decoder = export(run, "onnx", "decoder", out_dir=tmp_path / "export")
    assert decoder["output_values"] == "real values, unclamped"
    weights = export(run, "safetensors", "autoencoder", out_dir=tmp_path / "export")
    assert weights["parity"]["max_abs_diff"] <= 1e-4


def test_compare_draws_no_reconstruction_grid_for_real_values(run_dir, tmp_path):
    import aelab

    comparison = aelab.compare([run_dir], out_dir=tmp_path / "compare")
    assert (tmp_path / "compare" / "comparison.csv").is_file()
    assert not list((tmp_path / "compare").glob("recon_grid*"))
    assert "psnr" not in (tmp_path / "compare" / "comparison.csv").read_text()
    assert comparison is not None


def test_aelab_evals_automatic_tasks_leave_out_those_a_real_valued_run_cannot_serve(run_dir):
    """The automatic set holds denoise and generation (values in [0, 1] only): they are left out, and the ones the
    run can serve still run, instead of the whole set being refused."""
    from aelab.evaluation.runner import evaluate_path

    auto = {"one_class": [], "other": ["denoise", "generation", "probe"]}
    result = evaluate_path(run_dir, None, auto=auto)[str(run_dir)]
    assert not isinstance(result, Exception), result
    assert "eval/probe_acc" in result and not any("denoise" in k or "generat" in k for k in result)
