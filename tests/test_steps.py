"""The training step the base class owns: several optimizer steps per Lightning call (``steps_per_call``) train
exactly what one a call trains, and everything counted in batches or steps stays so."""

from __future__ import annotations

import csv
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from aelab.data.chunks import batch_units, count_chunks, plan_chunks
from aelab.errors import ConfigError, NonFiniteLossError
from aelab.models import Autoencoder
from aelab.nets import MLPDecoder, MLPEncoder

sys.path.insert(0, str(Path(__file__).parent / "extension"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

# 600 training images in batches of 64: 10 batches an epoch, chunks of 8 + 2 at the default steps_per_call
DETERMINISTIC = [
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "test=false",  # training is what is compared: no test pass, no image grids
    "callbacks.reconstruction_grid=null",
    "callbacks.generation_grids=null",
]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_training(run_a: Path, run_b: Path) -> None:
    """The same weights, optimizer and scheduler state, steps and logged rows, bit for bit."""
    a, b = checkpoint(run_a), checkpoint(run_b)
    assert a["global_step"] == b["global_step"]
    assert_same_tensors(a["state_dict"], b["state_dict"], "state_dict")
    assert_same_tensors(a["optimizer_states"], b["optimizer_states"], "optimizer")
    assert_same_tensors(a["lr_schedulers"], b["lr_schedulers"], "lr_schedulers")
    assert rows(run_a) == rows(run_b)


PLATEAU = (
    "model.scheduler={_target_: torch.optim.lr_scheduler.ReduceLROnPlateau, _partial_: true, patience: 0, "
    "factor: 0.5, threshold: 0.5}"
)


def test_eight_steps_per_call_train_bit_identical_weights_to_one(run_train):
    """Gaussian corruption (a random draw every step, reseeded per batch), a ReduceLROnPlateau scheduler, a last
    chunk shorter than the others: the weights, optimizer state, logged rows and learning rates are those of one
    batch per call."""
    common = ["model=mlp", "noise=gaussian", PLATEAU, *DETERMINISTIC]
    one, one_dir = run_train(*common, "steps_per_call=1", name="one")
    eight, eight_dir = run_train(*common, "steps_per_call=8", name="eight")
    assert one["status"] == eight["status"] == "completed"
    assert one["global_step"] == eight["global_step"] == 20  # 10 batches an epoch: a chunk of 8, one of 2
    assert_same_training(one_dir, eight_dir)
    assert one["final"] == eight["final"] and one["best"] == eight["best"]
    # the plateau scheduler stepped at each epoch's end (threshold 0.5: the second epoch did not improve enough)
    assert checkpoint(eight_dir)["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(5e-4)
    steps = [int(r["step"]) for r in rows(eight_dir) if r.get("train/recon_loss")]
    assert steps == list(range(20))  # log_every_n_steps=1: one row per optimizer step, numbered by step


def test_clipping_accumulation_and_bf16_agree_across_steps_per_call(run_train):
    """The Trainer's gradient_clip_val, accumulate_grad_batches and precision, which Lightning refuses under
    manual optimization, are applied by the step: a VAE (a sample every step) on dynamically binarized data."""
    common = [
        "model=vae",
        "model.iwae_samples=0",
        "data.binarize=dynamic",
        "trainer.precision=bf16-mixed",
        "trainer.accumulate_grad_batches=3",
        *DETERMINISTIC,
    ]
    clip = "trainer.gradient_clip_val=0.05"
    one, one_dir = run_train(*common, clip, "steps_per_call=1", name="one")
    eight, eight_dir = run_train(*common, clip, "steps_per_call=8", name="eight")
    assert one["status"] == eight["status"] == "completed", (one["error"], eight["error"])
    assert eight["global_step"] == 8  # per epoch: a step after batches 3, 6, 9 and the last (10)
    assert_same_training(one_dir, eight_dir)


def test_the_trainers_clipping_acts_on_the_owned_step():
    clipped, free = small_model(), small_model()
    fit(clipped, sprites(8), gradient_clip_val=1e-4, gradient_clip_algorithm="value")
    fit(free, sprites(8))
    assert clipped.gradient_clip_val == 1e-4 and clipped.trainer.gradient_clip_val is None  # adopted from the Trainer
    assert not all(torch.equal(a, b) for a, b in zip(clipped.state_dict().values(), free.state_dict().values()))


def test_limit_train_batches_and_val_check_interval_count_batches(run_train):
    common = [
        "model=linear",
        "trainer.limit_train_batches=7",
        "trainer.val_check_interval=3",
        "callbacks.overfitting_gap=null",
        *DETERMINISTIC,
    ]
    one, one_dir = run_train(*common, "steps_per_call=1", name="one")
    four, four_dir = run_train(*common, "steps_per_call=4", name="four")
    assert one["global_step"] == four["global_step"] == 14
    val_steps = [int(r["step"]) for r in rows(four_dir) if r.get("val/recon_loss")]
    assert val_steps == [2, 5, 9, 12]  # after batches 3 and 6 of each epoch (Lightning: not after the 7th)
    assert_same_training(one_dir, four_dir)


class FakeTrainer:
    limit_train_batches, val_check_interval, check_val_every_n_epoch, limit_val_batches = 1.0, 1.0, 1, 1.0
    _val_check_time_interval = None

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


@pytest.mark.parametrize(
    "given, expected_batches, expected_every, calls_per_interval",
    [
        (dict(), 100, None, None),
        (dict(limit_train_batches=0.5), 50, None, None),
        (dict(limit_train_batches=30, val_check_interval=0.25), 30, 7, 2),
        (dict(val_check_interval=10), 100, 10, 2),
        (dict(val_check_interval=10, check_val_every_n_epoch=None), 100, 10, 2),
    ],
)
def test_batch_unit_settings_become_calls(given, expected_batches, expected_every, calls_per_interval):
    trainer = FakeTrainer(**given)
    batches, every = batch_units(trainer, 100, 8)
    assert (batches, every) == (expected_batches, expected_every)
    assert trainer.limit_train_batches in (1.0, given.get("limit_train_batches"))
    if calls_per_interval:
        assert trainer.val_check_interval == calls_per_interval
    chunks = list(plan_chunks(0, batches, 8, every))
    assert len(chunks) == count_chunks(batches, 8, every)
    assert all(stop - start <= 8 for start, stop in chunks) and chunks[-1][1] == batches
    if every:  # no chunk spans a validation point
        assert all(start // every == (stop - 1) // every for start, stop in chunks)


def test_batch_unit_settings_that_cannot_be_chunks_are_refused():
    with pytest.raises(ConfigError, match="does not divide the 100 batches"):
        batch_units(FakeTrainer(val_check_interval=30, check_val_every_n_epoch=None), 100, 8)
    with pytest.raises(ConfigError, match="val_check_interval=300 is more than the 100 training batches"):
        batch_units(FakeTrainer(val_check_interval=300), 100, 8)
    with pytest.raises(ConfigError, match="less than one batch"):
        batch_units(FakeTrainer(limit_train_batches=0.001), 100, 8)


def test_a_checkpoint_from_inside_an_epoch_with_another_steps_per_call_is_refused():
    from aelab.data.datamodule import ChunkSampler

    sampler = ChunkSampler(1000, 10, True, False, steps_per_call=8)
    with pytest.raises(ConfigError, match="continue with steps_per_call=1"):
        sampler.load_state_dict({"epoch": 0, "batches": 37})  # written before steps_per_call existed
    sampler.load_state_dict({"epoch": 0, "batches": 100})  # the end of an epoch: any steps_per_call continues
    sampler.load_state_dict({"epoch": 2, "batches": 40, "steps_per_call": 8})
    sampler.set_epoch(2)
    first = next(iter(sampler))
    assert (first.first, first.sizes) == (40, [10] * 8)


def small_model(cls=Autoencoder, **kwargs):
    torch.manual_seed(0)
    return cls(
        input_shape=(1, 28, 28),
        bottleneck=8,
        encoder=partial(MLPEncoder, hidden=[32]),
        decoder=partial(MLPDecoder, hidden=[32]),
        **kwargs,
    )


def sprites(steps_per_call: int, **kwargs):
    from aelab.data import Sprites

    dm = Sprites(num_train=400, num_test=50, val_size=80, batch_size=32, **kwargs)
    dm.steps_per_call = steps_per_call
    return dm


def fit(model, data, **kwargs):
    trainer = L.Trainer(
        **{
            "max_epochs": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "accelerator": "cpu",
            "num_sanity_val_steps": 0,
            "limit_val_batches": 0,
            "deterministic": True,
            **kwargs,
        }
    )
    if isinstance(data, L.LightningDataModule):
        trainer.fit(model, datamodule=data)
    else:
        trainer.fit(model, train_dataloaders=data)
    return trainer


class ReadsValidation(L.Callback):
    """Reads the logged validation values where a callback does (the Optuna pruning one), and recomputes them."""

    def __init__(self):
        self.logged, self.expected = [], []

    def on_validation_epoch_end(self, trainer, pl_module):
        self.logged.append({k: float(trainer.callback_metrics[k]) for k in ("val/recon_loss", "val/psnr")})
        errors = []
        with torch.no_grad():
            for batch in trainer.datamodule.val_dataloader():
                x = trainer.datamodule.on_after_batch_transfer(batch, 0)["image"]
                errors.append((pl_module.reconstruct(x).clamp(0, 1) - x).pow(2).flatten(1).mean(1))
        mse = torch.cat(errors).double()
        self.expected.append({"val/recon_loss": float(mse.mean()), "val/psnr": float((-10 * mse.log10()).mean())})


def test_callbacks_read_each_epochs_own_validation_values():
    """The evaluation metric objects are logged once an epoch (at their first update): the values callbacks read at
    the epoch's end are that epoch's, over every validation batch, epoch after epoch."""
    reads = ReadsValidation()
    data = sprites(8)
    fit(small_model(), data, max_epochs=3, limit_val_batches=None, callbacks=[reads])
    assert len(reads.logged) == 3 and len({r["val/recon_loss"] for r in reads.logged}) == 3  # one value an epoch
    for logged, expected in zip(reads.logged, reads.expected):
        assert logged == pytest.approx(expected, rel=1e-5)


class StopsValidation(L.Callback):
    def on_validation_batch_end(self, *args):
        raise RuntimeError("stopped")  # a validation stopped after its first batch's metrics were updated


def test_a_validation_stopped_midway_does_not_lose_the_next_ones_values():
    model, data = small_model(), sprites(8)
    with pytest.raises(RuntimeError, match="stopped"):
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            callbacks=[StopsValidation()],
        )
        trainer.validate(model, datamodule=data, verbose=False)
    reads = ReadsValidation()
    fit(model, data, max_epochs=2, limit_val_batches=None, callbacks=[reads])
    for logged, expected in zip(reads.logged, reads.expected, strict=True):
        assert logged == pytest.approx(expected, rel=1e-5)


class CountsBackward(L.Callback):
    def __init__(self):
        self.calls = 0

    def on_after_backward(self, trainer, pl_module):
        self.calls += 1


class GradientHook(Autoencoder):
    def on_before_backward(self, loss):
        self.seen = getattr(self, "seen", 0) + 1


def test_the_step_bypasses_lightnings_hook_dispatch_only_when_nothing_hooks_in():
    """With no callback or model hook to run, the step calls backward and the optimizer itself; with one, it goes
    through Lightning, which runs it every step. Both train the same weights, optimizer state and steps."""
    direct, hooked, own_hook = small_model(), small_model(), small_model(GradientHook)
    counter = CountsBackward()
    fit(direct, sprites(8), gradient_clip_val=0.01)  # clipping: this class's on_before_optimizer_step, both ways
    fit(hooked, sprites(8), gradient_clip_val=0.01, callbacks=[counter])
    fit(own_hook, sprites(8), gradient_clip_val=0.01)
    assert direct._direct and not hooked._direct and not own_hook._direct
    assert counter.calls == own_hook.seen == 10
    for model in (hooked, own_hook):
        assert model.trainer.global_step == direct.trainer.global_step == 10
        assert_same_tensors(model.state_dict(), direct.state_dict())
        assert_same_tensors(model.trainer.optimizers[0].state_dict(), direct.trainer.optimizers[0].state_dict())


class StepLR(Autoencoder):
    """A schedule stepped every optimizer step (interval "step"), as an extension would configure one."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.5)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.8)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 3}}


def test_a_scheduler_stepped_every_step_counts_batches_whatever_steps_per_call():
    models = {n: small_model(StepLR) for n in (1, 4)}
    trainers = {n: fit(m, sprites(n)) for n, m in models.items()}
    assert trainers[1].global_step == trainers[4].global_step == 10  # 320 images: 10 batches
    lrs = {n: t.optimizers[0].param_groups[0]["lr"] for n, t in trainers.items()}
    assert lrs[1] == lrs[4] == pytest.approx(0.5 * 0.8**3)  # after batches 3, 6, 9
    assert_same_tensors(models[1].state_dict(), models[4].state_dict())


def test_the_optimizer_steps_do_not_look_for_nvml_where_it_is_absent(run_train, monkeypatch):
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, and torch then loads NVML with ctypes at every
    ``torch.cuda.is_available()`` — which PyTorch's optimizers call at every step. Where NVML is absent the run
    drops the variable when training starts (``aelab.models.step.skip_absent_nvml``): a few looks, none a step."""
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        pass
    else:
        pytest.skip("NVML is present here: Lightning's NVML-based check stays")
    looks, stock = [], ctypes.CDLL

    def counted(name, *args, **kwargs):
        looks.append(name)
        return stock(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", counted)
    counts = {}
    for epochs in (1, 3):
        looks.clear()
        monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning set it
        summary, _ = run_train(*DETERMINISTIC, f"trainer.max_epochs={epochs}", name=f"e{epochs}")
        assert summary["global_step"] == 10 * epochs  # 10 batches an epoch
        counts[epochs] = looks.count("libnvidia-ml.so.1")
    assert counts[1] == counts[3] < 10  # 20 more steps, no more looks; fewer looks than one epoch's 10 steps


def test_lightnings_nvml_check_stays_where_nvml_loads(monkeypatch):
    import ctypes
    import os

    from aelab.models.step import skip_absent_nvml

    def absent(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    for cdll, kept in ((lambda name, *args, **kwargs: object(), True), (absent, False)):
        monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        monkeypatch.setattr(ctypes, "CDLL", cdll)
        skip_absent_nvml()
        assert ("PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ) is kept


def test_no_value_is_read_back_to_the_host_per_step(monkeypatch):
    """With nothing logged or shown, aelab's code reads nothing from the device inside a chunk but the
    finite-loss flags, once per call."""
    reads, training = [], {}
    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        stock = getattr(torch.Tensor, name)

        def counted(self, *args, _stock=stock, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            # aelab's code while a training call runs (the sampler's index lists are host data, not device reads)
            if training.get("on") and "/aelab/" in caller.co_filename and "datamodule" not in caller.co_filename:
                reads.append((_name, Path(caller.co_filename).name, caller.co_name))
            return _stock(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    model = small_model()
    stock_step = model.training_step

    def step(*args):
        training["on"] = True
        try:
            return stock_step(*args)
        finally:
            training["on"] = False

    model.training_step = step
    fit(model, sprites(8), log_every_n_steps=1000)
    assert model.trainer.global_step == 10
    assert reads == [("__bool__", "step.py", "_check_flags")] * 2  # two calls (8 + 2 batches), one read each


class Legacy(Autoencoder):
    """A model written to the docs before the step moved into the base class."""

    def training_step(self, batch, batch_idx):
        x = batch["image"]
        return self._recon_loss(self(x)["out"], x)


class DenseEncodeTopK(Autoencoder):
    """A top-k code written to the old docs: forward and encode overridden separately."""

    def forward(self, x):
        return super().forward(x)

    def encode(self, x):
        z = super().encode(x)
        return z * (z.abs() >= z.abs().topk(2, dim=1).values[:, -1:])


@pytest.mark.parametrize(
    "cls, what",
    [
        (Legacy, "overrides training_step\\(\\), .* define objective\\(x, x_in\\)"),
        (DenseEncodeTopK, "overrides forward\\(\\), .* override code\\(x\\)"),
    ],
)
def test_an_extension_written_to_the_old_docs_is_refused_with_how_to_port(cls, what):
    with pytest.raises(ConfigError, match=f"test_steps.{cls.__name__} {what}.*docs/extending.md, recipe 1"):
        small_model(cls)


class TopK(Autoencoder):
    """A top-k code written to the new docs: one hook, so training and every evaluation use the sparse code."""

    def code(self, x):
        code = super().code(x)
        z = code["z"]
        return {**code, "z": z * (z.abs() >= z.abs().topk(2, dim=1).values[:, -1:])}


def test_one_code_path_hook_reaches_training_encoding_and_reconstruction():
    model = small_model(TopK)
    seen = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(int((args[0] != 0).sum(1).max())))
    fit(model, sprites(4))
    assert seen and max(seen) <= 2  # the decoder only ever read 2 units, in training too
    x = torch.rand(5, 1, 28, 28)
    assert int((model.encode(x) != 0).sum(1).max()) <= 2
    assert torch.equal(model.reconstruct(x), model.mean_image(model.decoder(model.encode(x))))
    codes, _ = model.infer(x)
    assert torch.equal(codes, model.encode(x))


def test_the_docs_extension_keeps_the_finite_loss_check_and_the_epoch_means():
    from mylab.toy_model import CodeL2Autoencoder

    model = small_model(CodeL2Autoencoder, code_weight=1e-3)
    trainer = fit(model, sprites(8), log_every_n_steps=5)
    assert "train/recon_loss_epoch" in trainer.callback_metrics and "train/code_norm" in trainer.callback_metrics
    exploding = small_model(
        CodeL2Autoencoder, optimizer=partial(torch.optim.SGD, lr=1e6), code_weight=1e-3, output_activation="identity"
    )
    with pytest.raises(NonFiniteLossError, match="the training loss became (nan|-?inf) at epoch 0, step \\d+ "):
        fit(exploding, sprites(8))


def test_plain_batches_from_another_loader_train_one_per_call():
    from torch.utils.data import DataLoader

    model = small_model()
    loader = DataLoader([{"image": im} for im in torch.rand(40, 1, 28, 28)], batch_size=8)
    trainer = fit(model, loader)
    assert trainer.global_step == 5


class Plain(L.LightningModule):
    """Someone's own LightningModule on aelab's DataModule."""

    def __init__(self):
        super().__init__()
        self.net, self.seen = torch.nn.Linear(784, 1), set()

    def training_step(self, batch, batch_idx):
        self.seen.add((batch["image"].dtype, batch["image"].shape[0]))
        return self.net(batch["image"].flatten(1)).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_another_lightning_module_gets_float_batches_one_a_call():
    plain = Plain()
    fit(plain, sprites(1, binarize="dynamic"))
    assert plain.seen == {(torch.float32, 32)}
    with pytest.raises(ConfigError, match="steps_per_call=8 hands Plain chunks of 8 batches.*use steps_per_call=1"):
        fit(Plain(), sprites(8))


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")


@needs_gpu
def test_no_host_sync_inside_a_call_on_the_gpu():
    """CUDA's sync debug mode counts the synchronizing operations of each call of 8 steps: the finite-loss flags'
    one read, nothing per step."""
    import warnings

    model, syncs = small_model(), []
    stock_step = model.training_step

    def step(*args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return stock_step(*args)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                syncs.append(sum("synchroniz" in str(w.message) for w in caught))

    model.training_step = step
    fit(model, sprites(8), accelerator="gpu", devices=1, deterministic=False, log_every_n_steps=1000)
    assert model.trainer.global_step == 10
    assert syncs == [1, 1], syncs  # calls of 8 and 2 batches


@needs_gpu
def test_steps_per_call_train_the_same_weights_on_the_gpu():
    models = {n: small_model(noise=None) for n in (1, 8)}
    for n, model in models.items():
        fit(model, sprites(n), accelerator="gpu", devices=1, deterministic=True, precision="bf16-mixed")
    for (name, a), b in zip(models[1].state_dict().items(), models[8].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_the_gpu_check_plans_every_gpu_row_and_prints_one_table(tmp_path):
    """scripts/gpu_check.sh's CPU side: its plan (--dry-run) and the table it builds from the logs."""
    import json
    import os
    import subprocess

    from bench_steps import default_steps_per_call

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHON=sys.executable)
    plan = subprocess.run([repo / "scripts" / "gpu_check.sh", "--dry-run"], cwd=repo, env=env, capture_output=True)
    assert plan.returncode == 0, plan.stderr
    default = default_steps_per_call()
    assert [s for s in plan.stdout.decode().splitlines() if s.startswith("row: ")] == [
        f"row: cuda {net} batch {batch} {precision} steps_per_call 1,{default}"
        for net in ("conv", "mlp")
        for batch in (256, 1024)
        for precision in ("32-true", "bf16-mixed")
    ]
    (tmp_path / "tests.log").write_text("....\n========== 4 passed in 61.20s ==========\n")
    row = {"device": "cuda", "net": "conv", "batch": 1024, "precision": "bf16-mixed", "bare": 2000.0}
    row["aelab"] = {"1": 1800.0, str(default): 1990.0}
    (tmp_path / "bench.log").write_text("device net ...\nROW " + json.dumps(row) + "\n")
    table = subprocess.run(
        [sys.executable, repo / "scripts" / "bench_train.py", "--gpu-table", tmp_path / "tests.log"]
        + [tmp_path / "bench.log", "NVIDIA H200", "412"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert table[0].startswith("aelab GPU check on NVIDIA H200 (412 s)")
    assert table[1] == f"| check | bare | aelab N=1 | aelab N={default} |"
    assert table[3] == "| GPU tests | 4 passed in 61.20s | | |"
    assert table[4] == "| conv, batch 1024, bf16-mixed | 2000 | 1800 (0.900) | 1990 (0.995) |"
