"""The CSV log of every run: Lightning's ``CSVLogger``, appending to ``csv/metrics.csv`` when a run continues."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but continuing an existing ``metrics.csv`` instead of deleting it."""

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

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
