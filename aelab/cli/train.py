"""``aelab-train``: train, test, evaluate and record one autoencoder run (or a Hydra sweep of them).

    aelab-train model=mlp model.bottleneck=8
    aelab-train -m model=mlp,conv model.bottleneck=2,4,8,16 seed=0,1
    aelab-train data.normal_class=3 eval=[anomaly]

The run itself is :mod:`aelab.run` (the pre-run step in the Hydra callback, then the job).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from aelab import config_dir
from aelab.cli.common import run_app
from aelab.run.job import run_job
from aelab.run.precheck import config_problems
from aelab.run.session import fast_exit, is_multirun


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return run_job(cfg)
    finally:
        if not is_multirun():  # a sweep freezes once, at its end (freezing between jobs would keep their garbage)
            fast_exit()


def main() -> None:
    """Console entry point ``aelab-train``."""
    run_app(_hydra_main, "aelab-train", "config", config_problems)


if __name__ == "__main__":
    main()
