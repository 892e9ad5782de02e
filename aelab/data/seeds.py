"""Seeds derived from a run's seed, so random draws do not depend on where a run was resumed."""


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """The seed of training batch ``batch_idx`` of epoch ``epoch`` on DDP rank ``rank``."""
    return (int(seed) * 1_000_003 + int(epoch) * 100_003 + int(batch_idx) * 101 + int(rank)) % 2**32
