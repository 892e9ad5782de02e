"""aelab: a framework for autoencoder research.

Nets (``aelab.nets``) are plain ``nn.Module``s, models (``aelab.models``) are
LightningModules, data (``aelab.data``) is a tensor-backed LightningDataModule;
only the entry points (``aelab.train``, ``aelab.evaluate``, ``aelab.compare``,
``aelab.predict``, ``aelab.export``) and ``conf/`` know Hydra.

The Python API (:mod:`aelab.api`), imported lazily so ``import aelab`` stays instant::

    aelab.train(["model=mlp", "model.bottleneck=8"])   # train one run, get it back loaded
    aelab.load_run("outputs/runs/<run>")               # .config .metrics .model .encode() .reconstruct() .score()
    aelab.compare(["outputs/sweeps/<sweep>"])          # tables and figures, as aelab-compare

``aelab.train`` and ``aelab.compare`` are also the modules of the ``aelab-train`` and
``aelab-compare`` entry points; calling them calls the API.
"""

import time
import types
from pathlib import Path

IMPORTED_AT = time.time()

__version__ = "0.1.0"


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


class _CallableModule(types.ModuleType):
    """A module that can be called: ``aelab.train(...)`` next to the ``aelab.train`` module of ``aelab-train``."""

    def __call__(self, *args, **kwargs):
        return self.__aelab_call__(*args, **kwargs)


def make_callable(module: types.ModuleType, function) -> None:
    """Make ``module`` callable as ``function`` (a package attribute cannot be both a module and a function)."""
    module.__aelab_call__ = function
    module.__class__ = _CallableModule


def __getattr__(name: str):
    """``aelab.train``, ``aelab.compare`` and ``aelab.load_run``, imported on first use."""
    import importlib

    if name in ("train", "compare"):
        return importlib.import_module(f"aelab.{name}")
    if name == "load_run":
        from aelab.api import load_run

        return load_run
    raise AttributeError(f"module 'aelab' has no attribute {name!r}")
