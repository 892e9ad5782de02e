"""``aelab-predict``: a trained run applied to new inputs (the work is :func:`aelab.deploy.predict.predict`).

aelab-predict run=outputs/runs/<run> input=/data/new_images
aelab-predict run=outputs/runs/<run> input=table.npz outputs=[codes,score]
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab import config_dir
from aelab.cli.common import entry_main, refuse_bad_options
from aelab.deploy.predict import OUTPUTS, predict
from aelab.errors import ConfigError, find_aelab_error


def predict_main(cfg: DictConfig) -> int:
    """The body of ``aelab-predict``: load the run, predict, say where the files are."""
    from aelab.run.load import load_run, pick_device

    try:
        if OmegaConf.is_missing(cfg, "run") or OmegaConf.is_missing(cfg, "input"):
            raise ConfigError(
                "name the run and the inputs: aelab-predict run=<run folder> input=<folder | array file | dataset name>"
            )
        outputs = list(cfg.outputs)
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown:
            raise ConfigError(f"outputs={outputs}: {unknown} are not among {list(OUTPUTS)}")
        run = load_run(
            cfg.run,
            which=str(cfg.checkpoint),
            device=pick_device(str(cfg.device)),
            setup_data=False,
            trust_checkpoint=bool(cfg.trust_checkpoint),
            trust_packages=list(cfg.trust_packages),
        )
        result = predict(
            run,
            str(cfg.input),
            cfg.out,
            outputs,
            bool(cfg.denoise),
            str(cfg.split),
            str(cfg.score),
            float(cfg.topk),
            int(cfg.batch_size),
            int(cfg.grid_images),
            progress=sys.stderr.isatty(),
        )
    except Exception as exc:  # noqa: BLE001 — instantiate wraps the datasets' own errors
        err = find_aelab_error(exc)
        if err is None:
            raise
        print(f"aelab-predict: error: {err}", file=sys.stderr)
        return 2
    print(f"predicted {result['rows']} inputs in {result['seconds']:.1f} s → {result['out']}")
    for key, path in result["files"].items():
        print(f"  {key}: {path}")
    return 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    refuse_bad_options("aelab-predict", cfg)
    code = predict_main(cfg)
    if code:
        sys.exit(code)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def main() -> None:
    """Console entry point ``aelab-predict``. SIGTERM stops it as Ctrl-C does: the arrays being written are removed,
    files already complete are kept."""
    import signal

    logging.getLogger("lightning").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _stop)
    try:
        entry_main(_hydra_main, "aelab-predict", "predict")
    except KeyboardInterrupt:
        print("aelab-predict: stopped; no half-written file is left in its output folder", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
