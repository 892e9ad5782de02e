"""aelab: a framework for autoencoder research.

Nets (``aelab.nets``) are plain ``nn.Module``s, models (``aelab.models``) are
LightningModules, data (``aelab.data``) is a tensor-backed LightningDataModule;
only the entry points (``aelab.cli``), the run lifecycle (``aelab.run``) and
``conf/`` know Hydra. ``docs/architecture.md`` maps the packages.

The Python API (:mod:`aelab.api`), imported lazily so ``import aelab`` stays instant::

    aelab.train(["model=mlp", "model.bottleneck=8"])   # train one run, get it back loaded
    aelab.load_run("outputs/runs/<run>")               # .config .metrics .model .encode() .reconstruct() .score()
    aelab.compare(["outputs/sweeps/<sweep>"])          # tables and figures, as aelab-compare

Extensions (your own models, datasets, evaluations) import from :mod:`aelab.extend`.
"""

import time
from pathlib import Path

IMPORTED_AT = time.time()

__version__ = "0.2.0"

from aelab import _compat  # noqa: E402 — old import paths (aelab.constraints, ...) keep working, with a warning

_compat.install()


def config_dir() -> Path:
    """Return the folder holding the Hydra config tree (``conf/``).

    In a source checkout (editable install) that is ``<repo>/conf``; a wheel
    ships the same tree inside the package as ``aelab/conf``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"aelab's config tree was not found next to {here}")


_API = ("train", "load_run", "compare")


def __getattr__(name: str):
    """``aelab.train``, ``aelab.load_run`` and ``aelab.compare`` (functions of :mod:`aelab.api`), imported on first "
    "use."""
    if name in _API:
        from aelab import api

        return getattr(api, name)
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
