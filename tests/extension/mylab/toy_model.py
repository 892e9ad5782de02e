"""A model variant from outside aelab: the autoencoder with an L2 penalty on the code, and its own metric."""

from __future__ import annotations

from aelab.constraints import NonNegativeFloat
from aelab.signatures import check_arguments

from aelab.metric_info import MetricInfo
from aelab.models import Autoencoder


class CodeL2Autoencoder(Autoencoder):
    """``recon_loss + code_weight · mean ‖z‖²``; logs ``train/code_norm``.

    Args:
        code_weight: weight of the squared code norm in the training objective.
        **kwargs: the options of :class:`aelab.models.Autoencoder`.
    """

    def __init__(self, code_weight: NonNegativeFloat = 1e-3, **kwargs):
        check_arguments(CodeL2Autoencoder, locals(), "model")
        super().__init__(**kwargs)
        self.code_weight = float(code_weight)

    def objective(self, x, x_in):
        out = self(x_in)  # the code path: {"z": code, "out": decoder output}
        recon = self._recon_loss(out["out"], x)
        norm = out["z"].pow(2).sum(1).mean()
        return recon + self.code_weight * norm, {"recon_loss": recon, "code_norm": norm}

    def metric_info(self) -> list[MetricInfo]:
        return super().metric_info() + [MetricInfo("train/code_norm", "mean squared code norm", None, "last", True)]
