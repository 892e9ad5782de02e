"""Bring your own data: image folders, array files (images and tabular vectors) and an MVTec-like anomaly set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, needs_fashion_mnist
from own_data import fashion_mnist_arrays, write_image_folder, write_mvtec_like

from aelab.data import AnomalyFolder, ArrayFile, ImageFolder, datamodule
from aelab.errors import AelabError, ConfigError

QUICK = [o for o in TINY if not o.startswith("data")]
FMNIST_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


@pytest.fixture(autouse=True)
def fresh_loads():
    datamodule._LOADED.clear()  # each test sees its own files, not another test's cached load
    yield
    datamodule._LOADED.clear()


@pytest.fixture(scope="module")
def fmnist_folder(tmp_path_factory):
    images, labels = fashion_mnist_arrays(400)
    return (
        write_image_folder(tmp_path_factory.mktemp("fmnist") / "images", images, labels, FMNIST_CLASSES),
        images,
        labels,
    )


# ------------------------------------------------------------------ image folders
@needs_fashion_mnist
def test_a_png_jpeg_folder_of_fashion_mnist_with_class_subfolders(fmnist_folder):
    folder, images, labels = fmnist_folder
    dm = ImageFolder(path=str(folder), batch_size=50)
    dm.setup()
    assert dm.dims == (1, 28, 28) and dm.class_names == sorted(FMNIST_CLASSES) and dm.has_labels
    assert (
        sum(len(s) for s in dm.splits.values()) == 400 and len(dm.splits["test"]) == 40 and len(dm.splits["val"]) == 36
    )
    # PNG pixels come back exactly, JPEG within compression noise; each image's label is its folder's class
    cache = Path(dm.info()["cache_file"])
    cached, files = np.load(cache, mmap_mode="r"), json.loads(cache.with_suffix(".json").read_text())["files"]
    dm._data()  # builds the cache
    for fmt, tolerance in (("png", 0), ("jpg", 6)):
        row = next(i for i, f in enumerate(files) if f.endswith(fmt))
        index = int(Path(files[row]).stem.split("_")[1])
        assert np.abs(cached[row, 0].astype(int) - images[index]).mean() <= tolerance
        assert FMNIST_CLASSES[labels[index]] == files[row].split("/")[0]
    classes = sorted(FMNIST_CLASSES)
    assert all(classes[int(dm.splits["test"].labels[k])] in FMNIST_CLASSES for k in range(len(dm.splits["test"])))


@needs_fashion_mnist
def test_the_second_run_starts_from_the_cache_and_a_changed_file_invalidates_it(fmnist_folder, tmp_path):
    folder, _, _ = fmnist_folder
    cache = tmp_path / "cache"
    started = time.monotonic()
    ImageFolder(path=str(folder), cache_dir=str(cache)).setup()
    first = time.monotonic() - started
    stems = sorted(p.name for p in cache.glob("*.npy"))
    datamodule._LOADED.clear()
    started = time.monotonic()
    ImageFolder(path=str(folder), cache_dir=str(cache)).setup()
    assert time.monotonic() - started < first  # no decoding: the same cache file
    assert sorted(p.name for p in cache.glob("*.npy")) == stems
    victim = next(folder.rglob("*.png"))
    os.utime(victim, (time.time() + 5, time.time() + 5))  # a changed file (new modification time)
    datamodule._LOADED.clear()
    ImageFolder(path=str(folder), cache_dir=str(cache)).setup()
    assert len(list(cache.glob("*.npy"))) == 2


def test_split_folders_resize_channels_and_the_memory_map(tmp_path):
    from aelab.data.sprites import make_sprites

    images, labels, _ = make_sprites(120, 28, 3, 0)
    for split, part in (("train", slice(0, 80)), ("val", slice(80, 100)), ("test", slice(100, 120))):
        write_image_folder(
            tmp_path / split, images[part].numpy(), labels[part].numpy(), ["square", "ellipse", "heart"], fmt=("png",)
        )
    dm = ImageFolder(path=str(tmp_path), image_size=[16, 20], channels=1, memory_budget_mb=0)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [80, 20, 20]
    assert dm.dims == (1, 16, 20) and dm.info()["memory_mapped"]
    assert dm.splits["train"].rows is not None  # batches gather rows of the memory map
    batch = next(dm.batches("train", limit=8))
    assert batch["image"].shape == (8, 1, 16, 20) and 0 <= batch["image"].min() and batch["image"].max() <= 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "no images found in"),
        (lambda p: (p.mkdir(), (p / "a.txt").write_text("x")), ".png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp"),
        (lambda p: _two_sizes(p), "differ in size"),
        (lambda p: _truncated(p), "cannot be used: "),
    ],
)
def test_bad_folders_get_one_clear_error_naming_the_file_and_leave_no_cache(tmp_path, make, message):
    folder = tmp_path / "images"
    make(folder)
    with pytest.raises(AelabError, match=message.replace(".", "\\.").replace("(", "\\(")) as info:
        ImageFolder(path=str(folder), cache_dir=str(tmp_path / "cache")).setup()
    if "cannot be used" in message:
        assert "truncated.png" in str(info.value) and "skip_bad=true" in str(info.value)
    assert not list((tmp_path / "cache").glob("*.npy")) and not list((tmp_path / "cache").glob("*.json"))


def _two_sizes(folder: Path) -> None:
    write_image_folder(folder, np.zeros((2, 28, 28), np.uint8), None)
    write_image_folder(folder / "big", np.zeros((1, 32, 32), np.uint8), None)


def _truncated(folder: Path) -> None:
    write_image_folder(folder, np.full((4, 28, 28), 128, np.uint8), None, fmt=("png",))
    data = (folder / "img_00000.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])


def test_skip_bad_leaves_out_and_lists_unreadable_files_and_mixed_modes_are_converted(tmp_path, caplog):
    from PIL import Image

    _truncated(tmp_path / "images")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "images" / "colour.png")
    dm = ImageFolder(path=str(tmp_path / "images"), skip_bad=True, test_fraction=0.2, val_fraction=0.25)
    dm.setup()
    assert dm.dims == (1, 28, 28)  # the majority is grayscale: the colour file is converted
    assert "mix grayscale" in caplog.text
    assert [f.split(":")[0] for f in dm.info()["skipped_files"]] == ["truncated.png"]
    assert sum(len(s) for s in dm.splits.values()) == 5


@needs_fashion_mnist
def test_training_from_a_folder_gives_the_metrics_of_the_same_images_in_memory(fmnist_folder, run_train, tmp_path):
    """The folder path serves the same uint8 images as an array of them: identical runs."""
    folder, images, labels = fmnist_folder
    png_only = tmp_path / "png"
    write_image_folder(png_only, images, labels, FMNIST_CLASSES, fmt=("png",))
    a, run_dir = run_train(
        "data=folder", f"data.path={png_only}", "model=mlp", *QUICK, "trainer.max_epochs=2", name="folder", tiny=False
    )
    assert a["status"] == "completed", a["error"]
    assert a["dataset_info"]["path"] == str(png_only) and a["dataset_info"]["cache_file"].endswith(".npy")
    assert a["dataset"].startswith("folder: 324 train / 36 val / 40 test, 1x28x28")


# ------------------------------------------------------------------ array files
@pytest.fixture
def digits_npz(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, x=(digits.images / 16.0).astype(np.float32), y=digits.target)
    return path


def test_sklearn_digits_as_an_npz_train_a_conv_autoencoder_and_the_probe_reads_their_labels(run_train, digits_npz):
    summary, run_dir = run_train(
        "data=arrays",
        f"data.path={digits_npz}",
        "model=conv",
        "model.encoder.channels=[16]",
        "model.bottleneck=8",
        *QUICK,
        "trainer.max_epochs=3",
        "eval=[probe]",
        "eval.probe.num_train=1000",
        tiny=False,
    )
    assert summary["status"] == "completed", summary["error"]
    assert summary["dataset"].startswith("arrays: ") and "1x8x8" in summary["dataset"]
    assert (
        summary["final"]["eval/probe_acc"] > summary["final"]["eval/chance_acc"] + 0.3
    )  # real digits: codes hold the class


@pytest.mark.parametrize(
    "layout, shape, dims",
    [
        ("auto", (50, 8, 8), (1, 8, 8)),
        ("auto", (50, 8, 6, 3), (3, 8, 6)),
        ("auto", (50, 3, 8, 6), (3, 8, 6)),
        ("nhwc", (50, 3, 8, 3), (3, 3, 8)),
    ],
)
def test_array_layouts(tmp_path, layout, shape, dims):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8))
    dm = ArrayFile(path=str(path), layout=layout)
    dm.setup()
    assert dm.dims == dims and not dm.has_labels


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.full((20, 5), np.nan, np.float32), None, "NaN or inf values in 20 row\\(s\\)"),
        (np.zeros((20, 2, 3, 4, 5), np.float32), None, "neither vectors"),
        (np.zeros((20, 5), np.float32), np.zeros(7, int), "7 labels \\(y\\) for 20 rows"),
        (np.random.default_rng(0).normal(0, 3, (20, 5)).astype(np.float32), None, "set data.normalize=minmax"),
        (np.zeros((20, 3, 8, 3), np.uint8), None, "set data.layout=nchw or nhwc"),
        (np.ones((20, 5), np.complex64), None, "holds complex64 values; aelab takes real numbers"),  # not cast silently
    ],
)
def test_bad_arrays_are_named_with_what_is_wrong(tmp_path, x, y, message):
    path = tmp_path / "bad.npz"
    np.savez(path, x=x, **({} if y is None else {"y": y}))
    with pytest.raises(ConfigError, match=message) as info:
        ArrayFile(path=str(path)).setup()
    assert str(path) in str(info.value)


def test_garbage_and_missing_array_files_are_named(tmp_path):
    garbage = tmp_path / "x.npy"
    garbage.write_bytes(b"not numpy at all")
    with pytest.raises(ConfigError, match=f"{garbage} cannot be read as .npy"):
        ArrayFile(path=str(garbage)).setup()
    with pytest.raises(AelabError, match="does not exist"):
        ArrayFile(path=str(tmp_path / "missing.npz")).setup()


def test_tabular_anomaly_detection_end_to_end(run_train, tmp_path):
    """Train on the normal rows of a real table (sklearn's breast cancer set: benign), score every row."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    path = tmp_path / "cancer.npz"
    normal = (table.target == 1).astype(int)  # benign = 1 in sklearn; here label 0 = normal
    np.savez(path, x=table.data.astype(np.float32), y=1 - normal)
    summary, _ = run_train(
        "data=arrays",
        f"data.path={path}",
        "data.normalize=minmax",
        "data.normal_class=0",
        "data.test_fraction=0.4",
        "model=mlp",
        "model.encoder.hidden=[16]",
        "model.bottleneck=4",
        *QUICK,
        "trainer.max_epochs=30",
        "data.batch_size=32",
        "eval=[anomaly]",
        tiny=False,
    )
    assert summary["status"] == "completed", summary["error"]
    assert summary["dataset"].split(",")[1].strip() == "30"  # vectors of 30 features
    assert summary["final"]["eval/auroc"] > 0.8, summary["final"]["eval/auroc"]
    assert "test/ssim" not in summary["final"]  # SSIM is for images


def test_conv_models_refuse_vectors_with_a_message_naming_the_mlp(run_train, tmp_path):
    path = tmp_path / "vectors.npy"
    np.save(path, np.random.default_rng(0).random((100, 12)).astype(np.float32))
    with pytest.raises(SystemExit, match="data are vectors of 12 features: use model=mlp"):
        run_train("data=arrays", f"data.path={path}", "model=conv", *QUICK, tiny=False)


# ------------------------------------------------------------------ an MVTec-like anomaly set
@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    return write_mvtec_like(tmp_path_factory.mktemp("mvtec") / "stripes")


def test_the_mvtec_layout_is_read_with_masks_and_defect_types(mvtec):
    dm = AnomalyFolder(path=str(mvtec))
    dm.setup()
    assert dm.class_names == ["good", "scratch", "spot"] and dm.has_masks and dm.normal_label == 0
    assert set(dm.splits["train"].labels.tolist()) == {0} and set(dm.splits["test"].labels.tolist()) == {0, 1, 2}
    test = dm.splits["test"]
    assert test.masks.shape == (90, 1, 32, 32)
    assert test.masks[test.labels == 0].sum() == 0 and (test.masks[test.labels > 0].flatten(1).sum(1) > 0).all()


def test_pixel_auroc_and_pro_on_the_anomaly_set_beat_chance_clearly(run_train, mvtec):
    summary, run_dir = run_train(
        "data=anomaly_folder",
        f"data.path={mvtec}",
        "model=conv",
        "model.bottleneck=16",
        *QUICK,
        "trainer.max_epochs=8",
        "data.batch_size=32",
        "eval=[anomaly]",
        tiny=False,
    )
    assert summary["status"] == "completed", summary["error"]
    final = summary["final"]
    assert final["eval/auroc"] > 0.75 and final["eval/pixel_auroc"] > 0.9 and final["eval/aupro"] > 0.7, final
    for kind in ("scratch", "spot"):
        assert final[f"eval/anomaly/{kind}/pixel_auroc"] > 0.85
    for kind in ("good", "scratch", "spot"):
        assert (run_dir / "eval" / f"anomaly_map_{kind}.png").is_file()


def test_pro_and_aupro_match_their_definitions():
    from aelab.evaluation.anomaly import aupro, pro_at

    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 2:6, 2:6] = 1
    masks[1, 10:12, 3:15] = 1
    perfect = masks.astype(float)
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=0.01) and pro_at(perfect, masks, 0.5) == 1.0
    half = perfect.copy()
    half[0, 2:4, 2:6] = 0  # half of the first region missed, the second found: PRO = (0.5 + 1) / 2
    assert pro_at(half, masks, 0.5) == pytest.approx(0.75)
    big = np.zeros((4, 64, 64), np.uint8)
    big[0, 5:25, 5:25], big[1, 30:40, 10:60], big[2, 2:10, 2:10], big[3, 40:60, 40:60] = 1, 1, 1, 1
    noise = np.random.default_rng(0).random(big.shape)
    assert aupro(noise, big) == pytest.approx(0.15, abs=0.02)  # random maps: PRO ≈ FPR, so the area ≈ 0.3² / 2 / 0.3


def test_missing_masks_and_a_broken_layout_are_named(tmp_path):
    root = write_mvtec_like(tmp_path / "set", n_train=20, n_good=4, n_defect=4)
    (root / "ground_truth" / "spot" / "001_mask.png").unlink()
    with pytest.raises(AelabError, match="001_mask.png is missing.*require_masks=false"):
        AnomalyFolder(path=str(root)).setup()
    datamodule._LOADED.clear()
    dm = AnomalyFolder(path=str(root), require_masks=False)
    dm.setup()
    assert dm.has_masks
    with pytest.raises(AelabError, match="not laid out like MVTec AD"):
        AnomalyFolder(path=str(tmp_path)).setup()


def test_a_required_path_is_named_before_any_run_folder(cli, tmp_path):
    result = cli("data=folder", *QUICK)
    assert result.returncode != 0
    assert "data.path must be set: aelab.data.ImageFolder needs it" in result.stderr
    assert not (tmp_path / "outputs" / "runs").exists()
