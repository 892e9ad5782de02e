"""A disk that fills up: one line naming the file and the cause, nothing already written lost (issue 34).

A real full disk is tried in ``test_reliability.py`` (a 24 MiB tmpfs, where mounting is allowed); here the write
fails with ``OSError(ENOSPC)`` injected where the file is written, so the checks run everywhere.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from aelab.errors import DiskFullError

NO_SPACE = "no space left on device while writing"


def _full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder)``: from then on every file written under ``folder`` (through ``Path.write_text``,
    ``open`` for writing or ``torch.save``) fails with ENOSPC, as on a disk that has filled up."""
    import builtins

    import torch

    folders: list[Path] = []
    real_write_text, real_open, real_save = Path.write_text, builtins.open, torch.save

    def inside(path) -> bool:
        try:
            path = Path(path).resolve()
        except TypeError:
            return False
        return any(f == path or f in path.parents for f in folders)

    def write_text(self, *args, **kwargs):
        if inside(self):
            raise _full()
        return real_write_text(self, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+") and isinstance(file, (str, Path)) and inside(file):
            raise _full()
        return real_open(file, mode, *args, **kwargs)

    def save(obj, f, *args, **kwargs):
        if inside(getattr(f, "name", f)):
            raise _full()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(torch, "save", save)
    return lambda folder: folders.append(Path(folder).resolve())


def test_a_failed_csv_append_keeps_the_rows_before_and_names_the_file(tmp_path, monkeypatch):
    import csv

    from aelab.tracking.csv import _AppendingWriter

    writer = _AppendingWriter(log_dir=str(tmp_path))
    writer.log_metrics({"loss": 1.0}, step=0)
    writer.save()
    path = tmp_path / "metrics.csv"
    before = path.read_text()

    real = csv.DictWriter.writerows

    def half_then_full(self, rows):  # part of a row reaches the file, then the disk is full
        self.writer.writerow(["0.5"])
        raise _full()

    monkeypatch.setattr(csv.DictWriter, "writerows", half_then_full)
    writer.log_metrics({"loss": 0.5}, step=1)
    with pytest.raises(DiskFullError) as raised:
        writer.save()
    assert str(raised.value).startswith(f"{NO_SPACE} {path}: the rows logged before are kept")
    assert path.read_text() == before  # the half row is gone, the earlier rows whole

    # a new column rewrites the file: atomically, so a full disk leaves the old file as it was
    monkeypatch.setattr(csv.DictWriter, "writerows", real)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(_full()))
    writer.log_metrics({"loss": 0.25, "lr": 0.1}, step=2)
    with pytest.raises(DiskFullError, match="metrics.csv"):
        writer.save()
    assert path.read_text() == before
    assert writer.metrics_keys == ["loss", "step"]  # the header on disk: the next save does not misalign rows
    assert not [p for p in tmp_path.iterdir() if p.name != "metrics.csv"]  # no temporary left behind


def test_a_full_disk_right_after_start_is_one_line_naming_the_file(make_cfg, full_disk, capsys):
    """The issue's probe: "error: (no message)" and a pointer at an error.log that was never written."""
    from aelab.run.job import run_job

    cfg = make_cfg("model=linear", name="full")
    run_dir = Path(cfg.paths.run_dir)
    full_disk(run_dir)
    with pytest.raises(SystemExit) as exited:
        run_job(cfg)
    first, *rest = str(exited.value.code).splitlines()
    assert first == (
        f"aelab-train: error: {NO_SPACE} {run_dir / '.hydra' / 'config.yaml'}. Free some space on that disk and run "
        "the same command again"
    )
    assert rest == [f"(run folder: {run_dir})"]
    out = capsys.readouterr().out
    assert "(no message)" not in out and "traceback:" not in out and "running in" not in out
    assert f"error: {NO_SPACE} {run_dir / '.hydra' / 'config.yaml'}" in out  # the summary says it too
    assert not (run_dir / "error.log").exists() and not (run_dir / "metrics.json").exists()
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_the_csv_and_the_record(make_cfg, full_disk, capsys, monkeypatch):
    import torch
    from lightning.pytorch.callbacks import Callback

    import aelab.run.parts as parts
    from aelab.run.job import run_job

    cfg = make_cfg("model=linear", "trainer.max_epochs=3", name="mid")
    run_dir = Path(cfg.paths.run_dir)
    kept: dict[str, bytes] = {}

    class FillAfterFirstEpoch(Callback):  # the disk fills up once epoch 1's checkpoints are written
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                names = ("checkpoints/last.ckpt", "csv/metrics.csv", "metrics.json")
                kept.update({name: (run_dir / name).read_bytes() for name in names})
                full_disk(run_dir)

    callbacks = parts.callbacks
    monkeypatch.setattr(parts, "callbacks", lambda job: [*callbacks(job), FillAfterFirstEpoch()])
    with pytest.raises(SystemExit) as exited:
        run_job(cfg)
    last = run_dir / "checkpoints" / "last.ckpt"
    message = str(exited.value.code).splitlines()[0]
    assert message.startswith(f"aelab-train: error: {NO_SPACE} ")
    assert str(run_dir) in message and "Traceback" not in message
    out = capsys.readouterr().out
    assert "(no message)" not in out and "traceback:" not in out  # error.log could not be written
    assert last.read_bytes() == kept["checkpoints/last.ckpt"] and torch.load(last, weights_only=False)["epoch"] == 0
    csv_now = (run_dir / "csv" / "metrics.csv").read_bytes()
    assert csv_now.startswith(kept["csv/metrics.csv"])  # every row written before is still there
    assert (run_dir / "metrics.json").read_bytes() == kept["metrics.json"]  # the earlier record, whole
    assert json.loads(kept["metrics.json"])["status"] == "running"
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]


def test_a_log_file_on_a_full_disk_is_left_with_one_warning_not_a_traceback_per_line(tmp_path, capsys, caplog):
    import logging

    from aelab.run.job import quiet_full_log

    logger = logging.getLogger("aelab.test_full_log")
    handler = logging.FileHandler(tmp_path / "train.log")
    logger.addHandler(handler)
    try:
        quiet_full_log(tmp_path)

        def full(*args):
            raise _full()

        handler.stream.write = full
        for i in range(3):
            logger.warning("line %d", i)
        assert handler not in logger.handlers
        assert "Logging error" not in capsys.readouterr().err
        assert [r.getMessage() for r in caplog.records if "no space" in r.getMessage()] == [
            f"no space left on device while writing {tmp_path / 'train.log'}: it is not written to any more"
        ]
    finally:
        logger.removeHandler(handler)
