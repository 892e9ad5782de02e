"""The progress bar updates every ``refresh_every`` batches, and per-step values are logged only where shown or "
"written."""

from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch.utils.data import DataLoader

from aelab.callbacks import ProgressBar
from aelab.models import Autoencoder, SparsityPenalty
from aelab.nets import MLPDecoder, MLPEncoder


def test_the_bar_updates_every_few_batches_and_bar_only_steps_log_the_shown_value(monkeypatch):
    torch.manual_seed(0)
    model = Autoencoder(
        input_shape=(1, 8, 8),
        bottleneck=4,
        sparse=SparsityPenalty(weight=1e-3),
        encoder=partial(MLPEncoder, hidden=[16]),
        decoder=partial(MLPDecoder, hidden=[16]),
    )
    loader = DataLoader([{"image": im} for im in torch.rand(23 * 4, 1, 8, 8)], batch_size=4)  # 23 batches
    updates, logged = [], []
    stock_update, stock_log = RichProgressBar.on_train_batch_end, L.LightningModule.log

    def update(self, trainer, *args):
        updates.append(trainer.global_step)
        return stock_update(self, trainer, *args)

    def log(self, name, *args, **kwargs):
        if self.trainer.training and name.startswith("train/") and not name.endswith("_epoch"):
            logged.append((self.global_step, name))
        return stock_log(self, name, *args, **kwargs)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", update)
    monkeypatch.setattr(Autoencoder, "log", log)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        log_every_n_steps=20,
        callbacks=[ProgressBar(refresh_every=5)],
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, loader)

    assert model.progress_every == 5
    assert updates == [5, 10, 15, 20, 23]  # every 5th batch and the epoch's last, not all 23
    shown = [(step, "train/recon_loss") for step in (4, 9, 14)]  # the steps before a bar update: the shown value only
    written = [(19, "train/recon_loss"), (19, "train/sparse_penalty"), (19, "train/loss")]  # a logger step: everything
    assert logged == shown + written
    assert "train/recon_loss" in trainer.progress_bar_metrics


def test_without_a_bar_values_are_logged_on_the_loggers_steps_only(monkeypatch):
    model = Autoencoder(
        input_shape=(1, 8, 8),
        bottleneck=4,
        encoder=partial(MLPEncoder, hidden=[16]),
        decoder=partial(MLPDecoder, hidden=[16]),
    )
    loader = DataLoader([{"image": im} for im in torch.rand(12 * 4, 1, 8, 8)], batch_size=4)
    steps = []
    stock_log = L.LightningModule.log
    monkeypatch.setattr(
        Autoencoder,
        "log",
        lambda self, name, *a, **k: (
            steps.append(self.global_step) if name == "train/recon_loss" else None,
            stock_log(self, name, *a, **k),
        )[1],
    )
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        log_every_n_steps=4,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, loader)
    assert model.progress_every is None and steps == [3, 7, 11]
