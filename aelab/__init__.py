"""aelab: a framework for autoencoder research.

Nets (``aelab.nets``) are plain ``nn.Module``s, models (``aelab.models``) are
LightningModules, data (``aelab.data``) is a tensor-backed LightningDataModule;
only the entry points (``aelab.train``, ``aelab.evaluate``, ``aelab.compare``)
and ``conf/`` know Hydra.
"""

from pathlib import Path

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
