"""Loading Lightning for a run without what torchmetrics imports at its own import for features no run uses.

Lightning imports torchmetrics when it loads, and torchmetrics 1.x imports ``scipy.signal`` at its import — 0.6 s
of a run's start-up here — only to give it a ``hamming`` attribute for SRMRpy, a package torchmetrics never
imports (torchmetrics issue #3457; the fix, pull requests #3459 and #3463, is not in a release). While
:func:`import_lightning` loads Lightning, ``scipy.signal`` is a stand-in that already has ``hamming`` (SciPy's
window, loaded when called) and loads the real module at any other use; after it, the stand-in is gone and
``import scipy.signal`` gives SciPy's module as ever (without the ``hamming`` alias, which only SRMRpy used).

Nothing changes where torchmetrics is already loaded (a notebook that imported it), where SciPy is not installed,
or where ``scipy.signal`` is already loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any


class _StandIn(types.ModuleType):
    """A module that loads the real one of its name at the first attribute it does not have. It describes itself as
    the real module does (``__spec__``, ``__file__``, ``__path__``: ``inspect`` asks every loaded module for its file,
    and a submodule imports under it); of the other dunders, ``__all__`` loads the real module and the rest (probes
    such as ``__wrapped__``) are absent, as on the real module."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name != "__all__":
            raise AttributeError(name)
        return getattr(_real(self.__name__), name)


def _real(name: str) -> types.ModuleType:
    if isinstance(sys.modules.get(name), _StandIn):
        del sys.modules[name]
    return importlib.import_module(name)


def _hamming(*args: Any, **kwargs: Any) -> Any:
    return _real("scipy.signal").windows.hamming(*args, **kwargs)


@contextlib.contextmanager
def standing_in(name: str, **attributes: Any) -> Iterator[bool]:
    """For the duration, the submodule ``name`` (``package.module``) is a stand-in holding ``attributes`` and loading
    the real module at any other use; True when it stood in (the module was not loaded and can be found)."""
    parent_name, _, child = name.rpartition(".")
    if name in sys.modules:
        yield False
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        yield False
        return
    parent = sys.modules[parent_name]  # find_spec imported it
    stand_in = _StandIn(name)
    stand_in.__spec__, stand_in.__loader__, stand_in.__file__ = spec, spec.loader, spec.origin
    if spec.submodule_search_locations is not None:
        stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__package__ = name if spec.submodule_search_locations is not None else parent_name
    stand_in.__dict__.update(attributes)
    sys.modules[name] = stand_in
    setattr(parent, child, stand_in)
    try:
        yield True
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        if parent.__dict__.get(child) is stand_in:
            delattr(parent, child)
            if name in sys.modules:  # the real module was loaded meanwhile
                setattr(parent, child, sys.modules[name])


def import_lightning() -> types.ModuleType:
    """``lightning.pytorch``, loaded (when it is not yet) without ``scipy.signal``."""
    if "torchmetrics" in sys.modules:
        return importlib.import_module("lightning.pytorch")
    with standing_in("scipy.signal", hamming=_hamming):
        return importlib.import_module("lightning.pytorch")
