"""A TopK sparse autoencoder: the code keeps its k largest units and zeroes the rest (Makhzani & Frey 2014)."""

import torch

from aelab.extend import Autoencoder, PositiveInt, check_arguments


class TopKAutoencoder(Autoencoder):
    """The autoencoder whose code keeps only its ``k`` units of largest magnitude.

    Args:
        k: the units kept per code (at most ``bottleneck``).
        **kwargs: the options of :class:`aelab.extend.Autoencoder` (bottleneck, nets, loss, optimizer, ...).
    """

    option_rules = (("k <= bottleneck", "{path}.k={k} must not exceed {path}.bottleneck={bottleneck}"),)

    def __init__(self, k: PositiveInt = 8, **kwargs):
        check_arguments(TopKAutoencoder, locals(), "model")  # types, ranges and option_rules, as the config check
        super().__init__(**kwargs)
        self.k = int(k)

    def code(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The one code path: training, encode(), reconstruct() and every evaluation see the sparse code."""
        code = super().code(x)
        z = code["z"]
        kept = z.abs().topk(self.k, dim=1).indices
        code["z"] = torch.zeros_like(z).scatter(1, kept, z.gather(1, kept))
        return code
