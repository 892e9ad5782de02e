"""A logger whose failures never stop training: the mix-in of aelab's W&B and MLflow loggers."""

from __future__ import annotations

import logging

log = logging.getLogger("aelab.tracking")


class _Resilient:
    """A logger whose failures never stop training (mixed in before a Lightning logger class).

    The first exception from the tracking service (service gone, disk full,
    a bug) is logged as a warning and the logger turns itself off; the CSV
    log and ``metrics.json`` carry on.
    """

    failed: str | None = None
    service = "tracking"

    def _guard(self, what: str, call, *args, **kwargs):
        if self.failed is not None:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — tracking must never kill training
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s failed in %s (%s); %s logging is off for the rest of this run, "
                "the CSV log and metrics.json are unaffected",
                self.service,
                what,
                self.failed,
                self.service,
            )
            return None

    def log_metrics(self, *args, **kwargs):
        return self._guard("log_metrics", super().log_metrics, *args, **kwargs)

    def log_hyperparams(self, *args, **kwargs):
        return self._guard("log_hyperparams", super().log_hyperparams, *args, **kwargs)

    def after_save_checkpoint(self, *args, **kwargs):
        return self._guard("after_save_checkpoint", super().after_save_checkpoint, *args, **kwargs)

    def finalize(self, *args, **kwargs):
        return self._guard("finalize", super().finalize, *args, **kwargs)
