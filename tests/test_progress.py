"""The progress bar counts batches and updates every ``refresh_every`` of them, whatever ``steps_per_call``; per-step
values are logged only where they are shown or written."""

from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import Logger

from aelab.callbacks import ProgressBar
from aelab.data import Sprites
from aelab.models import Autoencoder, SparsityPenalty
from aelab.nets import MLPDecoder, MLPEncoder


def model():
    torch.manual_seed(0)
    return Autoencoder(
        input_shape=(1, 28, 28),
        bottleneck=4,
        sparse=SparsityPenalty(weight=1e-3),
        encoder=partial(MLPEncoder, hidden=[16]),
        decoder=partial(MLPDecoder, hidden=[16]),
    )


def sprites(steps_per_call: int):
    dm = Sprites(num_train=23 * 8 + 40, num_test=40, val_size=40, batch_size=8)  # 23 training batches
    dm.steps_per_call = steps_per_call
    return dm


class Rows(Logger):
    """A logger that keeps the rows it is given."""

    name, version = "rows", 0

    def __init__(self):
        super().__init__()
        self.rows = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, metrics))

    def log_hyperparams(self, *args, **kwargs):
        pass


def fit(steps_per_call: int, **kwargs) -> tuple[L.Trainer, Autoencoder, Rows]:
    net, rows = model(), Rows()
    trainer = L.Trainer(
        max_epochs=1,
        logger=rows,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kwargs,
    )
    trainer.fit(net, datamodule=sprites(steps_per_call))
    return trainer, net, rows


def test_the_bar_counts_batches_and_updates_every_few_of_them(monkeypatch):
    updates, totals, logged = [], [], []
    stock_update, stock_log = RichProgressBar._update, L.LightningModule.log

    def update(self, bar, current, *args, **kwargs):
        if bar is not None and bar == self.train_progress_bar_id:
            updates.append(current)
            totals.append(self.progress.tasks[bar].total)
        return stock_update(self, bar, current, *args, **kwargs)

    def log(self, name, *args, **kwargs):
        if self.trainer.training and name.startswith("train/") and not name.endswith("_epoch"):
            logged.append((self.global_step, name))
        return stock_log(self, name, *args, **kwargs)

    monkeypatch.setattr(RichProgressBar, "_update", update)
    monkeypatch.setattr(Autoencoder, "log", log)
    for steps_per_call in (1, 8):
        updates.clear(), totals.clear(), logged.clear()
        trainer, net, rows = fit(steps_per_call, log_every_n_steps=20, callbacks=[ProgressBar(refresh_every=5)])
        assert net.progress_every == 5
        # drawn at most twice a second (Lightning's default rate is 100), from the training thread
        assert trainer.progress_bar_callback.refresh_rate == 2
        assert trainer.progress_bar_callback.progress.live._refresh_thread is None
        if steps_per_call == 1:
            assert updates == [5, 10, 15, 20, 23]  # every 5th batch and the epoch's last, not all 23
        else:  # calls of 8 batches: the calls in which the count passed a multiple of 5, and the last
            assert updates == [8, 16, 23]
        assert set(totals) == {23}  # batches, not calls
        # a logger's step (the 20th) writes every value; the bar shows one value, logged (a self.log, ~0.3 ms)
        # once per call in which the bar updates, after the call's steps
        assert [(s, sorted(m)) for s, m in rows.rows if "train/recon_loss" in m] == [
            (19, ["epoch", "train/loss", "train/recon_loss", "train/sparse_penalty"])
        ]
        shown = [(5, "train/recon_loss"), (10, "train/recon_loss"), (15, "train/recon_loss"), (20, "train/recon_loss")]
        if steps_per_call == 8:
            shown = [(8, "train/recon_loss"), (16, "train/recon_loss"), (23, "train/recon_loss")]
        everything = [(shown[-1][0], "train/sparse_penalty"), (shown[-1][0], "train/loss")]
        assert logged == shown + everything
        assert "train/recon_loss" in trainer.progress_bar_metrics


def test_without_a_bar_values_are_logged_on_the_loggers_steps_only():
    for steps_per_call in (1, 8):
        trainer, net, rows = fit(steps_per_call, log_every_n_steps=4, enable_progress_bar=False)
        assert net.progress_every is None
        assert [s for s, m in rows.rows if "train/recon_loss" in m] == [3, 7, 11, 15, 19]
        assert trainer.callback_metrics["train/recon_loss"] == rows.rows[4][1]["train/recon_loss"]


def test_the_bar_is_drawn_when_due_and_when_a_bar_ends_and_stopping_it_waits_for_no_thread(monkeypatch):
    from rich.progress import Progress

    draws, joined = [], []
    stock_refresh = Progress.refresh

    def refresh(self):
        draws.append([(task.completed, task.finished) for task in self.tasks])
        return stock_refresh(self)

    def join(self, timeout=None):
        joined.append(type(self).__name__)

    monkeypatch.setattr(Progress, "refresh", refresh)
    monkeypatch.setattr("threading.Thread.join", join)
    monkeypatch.setattr("time.monotonic", lambda: 100.0)  # no time passes: only the bars' changes are drawn
    fit(1, callbacks=[ProgressBar(refresh_every=1)])
    assert joined == []  # Lightning's refresh thread would be joined at the end of the stage (up to 0.5 s asleep)
    # drawn when the bar appears and when it ends (and once more as it stops), not at any of the 22 updates between
    # (no time passed)
    assert draws[-2:] == [[(23, True)], [(23, True)]], draws
    assert all(d == [(0, False)] for d in draws[:-2]) and len(draws) <= 4, draws
    # in a notebook, as Lightning's own bar there: every update is drawn
    draws.clear()
    monkeypatch.setattr("aelab.callbacks.progress._IS_INTERACTIVE", True)
    fit(1, callbacks=[ProgressBar(refresh_every=1)])
    assert {d[0][0] for d in draws if d} >= set(range(1, 24)), draws
