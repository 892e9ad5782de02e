"""The CSV log of every run: Lightning's ``CSVLogger``, appending to ``csv/metrics.csv`` when a run continues."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but continuing an existing ``metrics.csv`` instead of deleting it, and never losing
    rows already written: a new column rewrites the file atomically, and a failed append (a full disk) cuts the file
    back to its earlier rows and raises a :class:`aelab.errors.DiskFullError` naming it."""

    def save(self) -> None:
        import csv

        if not self.metrics:
            return
        path, keys, rewritten = self.metrics_file_path, list(self.metrics_keys), False
        try:
            new_keys = self._record_new_keys()
            exists = os.path.isfile(path)
            if new_keys and exists:
                self._rewrite_with_new_header(self.metrics_keys)
                rewritten = True
            from aelab.store.files import open_in_place

            fh = open_in_place(path, "a" if exists else "w", newline="")  # never through a link or a hard link
            size = os.fstat(fh.fileno()).st_size
            try:
                with fh:
                    writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
                    if not exists:
                        writer.writeheader()
                    writer.writerows(self.metrics)
            except BaseException:
                if not exists:
                    Path(path).unlink(missing_ok=True)
                else:  # the rows written before stay whole (truncating needs no space)
                    with open_in_place(path, "a") as again:
                        again.truncate(size)
                raise
        except Exception as exc:
            if not rewritten:  # the header on disk (if any) is still the old one
                self.metrics_keys = keys
            from aelab.store.files import disk_full_error

            kept = "the rows logged before are kept" if os.path.isfile(path) else None
            full = disk_full_error(path, exc, kept=kept)
            if full is None:
                raise
            raise full from exc
        self.metrics = []

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        import csv
        import io

        from aelab.store.files import write_text_atomic

        with open(self.metrics_file_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_file_path, out.getvalue())

    def log_hparams(self, params: dict) -> None:
        from lightning.pytorch.core.saving import save_hparams_to_yaml

        from aelab.store.files import atomic_path

        self.hparams.update(params)
        with atomic_path(Path(self.log_dir) / self.NAME_HPARAMS_FILE) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)

    def _check_log_dir_exists(self) -> None:
        import csv

        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = list(header)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to ``metrics.csv`` when a run is resumed (Lightning's would delete it)."""

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at ``step`` or later (by a run that died past its checkpoint); returns how many.

        A resumed run trains those steps again, so they would otherwise appear twice.
        """
        import csv
        import io

        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return 0
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or "step" not in rows[0]:
            return 0
        at = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if not (len(r) > at and r[at] and float(r[at]) >= step)]
        dropped = len(rows) - len(kept)
        if dropped:
            from aelab.store.files import write_text_atomic

            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(kept)
            write_text_atomic(path, out.getvalue())
            self._experiment = None  # the writer re-reads the trimmed file's header before appending
        return dropped

    def finalize(self, status: str) -> None:
        """Write the rows not written yet; after a failure (``status`` "failed") a row that cannot be written is left
        out with a warning instead of raising over the failure itself (a full disk: the same disk again)."""
        if status == "success":
            return super().finalize(status)
        try:
            super().finalize(status)
        except Exception as exc:  # noqa: BLE001 — the run's own failure is the one to report
            from aelab.store.files import no_space

            reason = os.strerror(no_space(exc).errno).lower() if no_space(exc) is not None else exc
            log.warning("the last rows of %s were not written (%s)", self.experiment.metrics_file_path, reason)
            self.experiment.metrics = []
        return None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
