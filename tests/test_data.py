"""The tensor-backed DataModule: splits, limits, sources and the missing-dataset error."""

import pytest
import torch
from conftest import needs_fashion_mnist

from aelab.data import MNIST, FashionMNIST, Sprites, to_float_batch
from aelab.errors import ConfigError, DatasetNotFoundError

SPRITES = dict(num_train=600, num_test=200, val_size=100)


def ids(dm, split):
    return set(dm.splits[split].ids.tolist())


def test_splits_are_disjoint_deterministic_and_sized():
    dm = Sprites(**SPRITES, seed=1)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [500, 100, 200]
    assert not ids(dm, "train") & ids(dm, "val")
    assert not (ids(dm, "train") | ids(dm, "val")) & ids(dm, "test")
    again = Sprites(**SPRITES, seed=1)
    again.setup()
    assert ids(again, "val") == ids(dm, "val")
    other = Sprites(**SPRITES, seed=2)
    other.setup()
    assert ids(other, "val") != ids(dm, "val")


def test_limits_take_subsets():
    dm = Sprites(**SPRITES, limit_train=50, limit_val=20, limit_test=30)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [50, 20, 30]


def test_batches_are_slices_of_uint8_tensors_then_floats():
    dm = Sprites(**SPRITES, batch_size=64)
    dm.setup()
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 8
    assert batches[0]["image"].dtype == torch.uint8 and batches[0]["image"].shape == (64, 1, 28, 28)
    seen = torch.cat([b["id"] for b in batches])
    assert sorted(seen.tolist()) == sorted(ids(dm, "train"))  # every image once per epoch
    x = to_float_batch(batches[0])["image"]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert (x > 0).any()


def test_shuffling_changes_between_epochs_but_not_between_runs():
    def first_ids(dm):
        loader = dm.train_dataloader()
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)  # Lightning calls this before every training epoch
            out.append(next(iter(loader))["id"][:5].tolist())
        return out

    a, b = Sprites(**SPRITES), Sprites(**SPRITES)
    a.setup(), b.setup()
    epochs_a = first_ids(a)
    assert epochs_a[0] != epochs_a[1]
    assert epochs_a == first_ids(b)


def test_sprites_sizes_channels_and_factors():
    dm = Sprites(image_size=[24, 40], channels=3, num_train=300, num_test=50, val_size=50)
    dm.setup()
    assert dm.dims == (3, 24, 40)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, 24, 40)
    assert batch["factors"].shape[1] == len(dm.factor_names) == 6
    assert torch.equal(batch["factors"][:, 0], batch["label"])


def test_one_class_training_keeps_all_test_classes():
    dm = Sprites(**SPRITES, normal_class=1)
    dm.setup()
    assert set(dm.splits["train"].labels.tolist()) == {1}
    assert set(dm.splits["val"].labels.tolist()) == {1}
    assert set(dm.splits["test"].labels.tolist()) == {0, 1, 2}


def test_binarize_modes():
    fixed = Sprites(**SPRITES, binarize="fixed")
    fixed.setup()
    for split in ("train", "val", "test"):
        assert set(fixed.splits[split].images.unique().tolist()) <= {0, 255}
    dynamic = Sprites(**SPRITES, binarize="dynamic")
    dynamic.setup()
    assert len(set(dynamic.splits["train"].images.unique().tolist())) > 2  # resampled per batch
    assert set(dynamic.splits["val"].images.unique().tolist()) <= {0, 255}
    batch = next(iter(dynamic.train_dataloader()))
    a = to_float_batch(batch, dynamic_binarize=True)["image"]
    b = to_float_batch(batch, dynamic_binarize=True)["image"]
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(binarize="yes"), "dynamic"),
        (dict(normal_class=7), "normal_class"),
        (dict(limit_train=0), "limit_train"),
        (dict(channels=2), "data.channels"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Sprites(**kwargs)


def test_options_of_another_dataset_are_refused():
    with pytest.raises(TypeError, match="image_size"):
        FashionMNIST(image_size=32)


@pytest.mark.parametrize(
    "name, system_dir", [("mnist", "/usr/share/datasets/mnist"), ("cifar10", "/usr/share/datasets/cifar10")]
)
def test_missing_dataset_names_the_places_searched(tmp_path, name, system_dir):
    from aelab.data import CIFAR10

    dm = {"mnist": MNIST, "cifar10": CIFAR10}[name](root=str(tmp_path), download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path) in message and system_dir in message
    assert "data.download=true" in message and "To fix" in message


def test_failed_download_is_reported_not_raised_from_torchvision(tmp_path, monkeypatch):
    from aelab.data import sources

    def no_network(root):
        raise OSError("Name or service not known")

    spec = sources.MNIST.source
    with pytest.raises(DatasetNotFoundError, match="Download into .*failed \\(OSError: Name or service not known\\)"):
        sources.load_file_source(type(spec)(**{**spec.__dict__, "download": no_network}), tmp_path, download=True)


def test_data_root_is_searched_first(tmp_path):
    """IDX files (gzipped or not) in <root>/mnist are found without any download."""
    import gzip

    import numpy as np

    def write_idx(path, array, gz):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
        data = header + array.astype(np.uint8).tobytes()
        if gz:
            path = path.with_name(path.name + ".gz")
            path.write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 255, (30, 28, 28)), gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, (30,)), gz=False)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)), gz=True)
    write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, (10,)), gz=True)
    dm = MNIST(root=str(tmp_path), download=False, val_size=5)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [25, 5, 10]
    assert str(folder) in dm.origin


@needs_fashion_mnist
def test_fashion_mnist_loads_from_the_debian_location(tmp_path):
    dm = FashionMNIST(root=str(tmp_path / "empty"), download=False)
    dm.setup()
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 60000
    assert len(dm.splits["test"]) == 10000
    assert dm.dims == (1, 28, 28)
    assert "/usr/share/datasets/fashion-mnist" in dm.origin
    labels = dm.splits["test"].labels
    assert torch.equal(torch.bincount(labels), torch.full((10,), 1000))
    assert dm.splits["train"].images.dtype == torch.uint8


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("num_items, batch", [(1000, 64), (1003, 50), (7, 4)])
def test_ranks_share_an_epoch_without_repeats(world, num_items, batch):
    """DDP sharding: the ranks' batches are disjoint, training gives every rank as many steps, eval covers all."""
    from aelab.data.datamodule import BatchIndexSampler

    for even, shuffle in ((True, True), (False, False)):
        per_rank = []
        for rank in range(world):
            sampler = BatchIndexSampler(
                num_items, batch, shuffle, drop_last=False, seed=3, rank=rank, world_size=world, even=even
            )
            sampler.set_epoch(5)
            per_rank.append([i for b in sampler for i in b])
            assert len(list(sampler)) == len(sampler)
            assert all(0 < len(b) <= batch for b in sampler)
        seen = [i for ids in per_rank for i in ids]
        assert len(seen) == len(set(seen)), "an image was served twice in one epoch"
        if even:
            lengths = {
                len(list(BatchIndexSampler(num_items, batch, shuffle, False, 3, r, world, True))) for r in range(world)
            }
            assert len(lengths) == 1, "training ranks must take the same number of steps"
            assert num_items - len(seen) < world
        else:
            assert sorted(seen) == list(range(num_items)), "evaluation must cover every image exactly once"


def test_two_ranks_see_the_global_batches_of_one_process():
    """Per-process batch B on 2 ranks = the global batch 2B of one process (same images per step)."""
    from aelab.data.datamodule import BatchIndexSampler

    one = list(BatchIndexSampler(1000, 128, True, False, seed=1, even=True))
    two = [list(BatchIndexSampler(1000, 64, True, False, seed=1, rank=r, world_size=2, even=True)) for r in range(2)]
    for step, (a, b) in enumerate(zip(*two)):
        assert sorted(a + b) == sorted(one[step])


def test_epoch_order_depends_on_seed_and_epoch_only():
    from aelab.data.datamodule import BatchIndexSampler

    a, b = BatchIndexSampler(100, 10, True, False, seed=0), BatchIndexSampler(100, 10, True, False, seed=0)
    list(a)  # iterating does not advance the order: a resumed run starts epoch 3 like an uninterrupted one
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
