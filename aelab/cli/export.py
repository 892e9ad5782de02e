"""``aelab-export``: a trained encoder, decoder or autoencoder as a file for other runtimes
(the work is :func:`aelab.deploy.export.export`).

    aelab-export run=outputs/runs/<run> format=onnx part=autoencoder
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab import config_dir
from aelab.cli.common import entry_main, refuse_bad_options
from aelab.deploy.export import FORMATS, PARTS, description_path, export
from aelab.errors import ConfigError, find_aelab_error


def export_main(cfg: DictConfig) -> int:
    from aelab.run.load import load_run

    try:
        if OmegaConf.is_missing(cfg, "run"):
            raise ConfigError(
                "name the run: aelab-export run=<run folder> format=onnx|torchscript|safetensors "
                "part=encoder|decoder|autoencoder"
            )
        if str(cfg.format) not in FORMATS or str(cfg.part) not in PARTS:
            raise ConfigError(
                f"format={cfg.format} must be one of {list(FORMATS)} and part={cfg.part} one of {list(PARTS)}"
            )
        run = load_run(
            cfg.run,
            which=str(cfg.checkpoint),
            device="cpu",
            trust_checkpoint=bool(cfg.trust_checkpoint),
            trust_packages=list(cfg.trust_packages),
        )
        result = export(
            run, str(cfg.format), str(cfg.part), cfg.out, int(cfg.batch), float(cfg.tolerance), int(cfg.opset)
        )
    except Exception as exc:  # noqa: BLE001 — Hydra's instantiate wraps the components' own errors: unwrapped below
        err = find_aelab_error(exc)
        if err is None:
            raise
        print(f"aelab-export: error: {err}", file=sys.stderr)
        return 2
    p = result["parity"]
    print(f"exported {result['part']} of {result['run']} → {result['file']}")
    print(
        f"parity with PyTorch on {p['batches'][0]} and {p['batches'][1]} real test inputs ({p['runtime']}): "
        f"max |difference| = {p['max_abs_diff']:.2e} (tolerance {p['tolerance']:g})"
    )
    print(f"description: {description_path(Path(result['file']), result['format'])}")
    return 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def _hydra_main(cfg: DictConfig) -> None:
    refuse_bad_options("aelab-export", cfg)
    code = export_main(cfg)
    if code:
        sys.exit(code)


def main() -> None:
    """Console entry point ``aelab-export``."""
    logging.getLogger("lightning").setLevel(logging.WARNING)
    entry_main(_hydra_main, "aelab-export", "export")


if __name__ == "__main__":
    main()
