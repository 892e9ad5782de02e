"""Old import paths of aelab 0.1, kept working for one release.

aelab 0.2 moved its flat top-level modules into packages by layer (``aelab.config``,
``aelab.store``, ``aelab.run``, ``aelab.cli``, ...). Code written against 0.1 — a
researcher's extension (``from aelab.constraints import PositiveInt``) or a saved run
folder whose config names ``aelab.checkpoints.AtomicCheckpointIO`` — still imports: an
import hook serves the module at its new place under the old name, with an
:class:`AelabDeprecationWarning` saying where it lives now. The config reader maps the
old names too (:func:`current_name`), so the early config check reads an extension that
imports from an old path exactly as it reads one that imports from :mod:`aelab.extend`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module → its home since aelab 0.2
MOVED: dict[str, str] = {
    "aelab.constraints": "aelab.config.constraints",
    "aelab.signatures": "aelab.config.signatures",
    "aelab.config_checks": "aelab.config.checks",
    "aelab.train_options": "aelab.config.options",
    "aelab.record": "aelab.store.record",
    "aelab.locks": "aelab.store.locks",
    "aelab.files": "aelab.store.files",
    "aelab.checkpoints": "aelab.store.checkpoints",
    "aelab.runs": "aelab.store.runs",
    "aelab.folders": "aelab.run.folders",
    "aelab.session": "aelab.run.session",
    "aelab.summary": "aelab.run.summary",
    "aelab.build": "aelab.run.parts",
    "aelab.search": "aelab.run.search",
    "aelab.decode": "aelab.data.decode",
    "aelab.inputs": "aelab.data.inputs",
    "aelab.batches": "aelab.data.batches",
    "aelab.seeds": "aelab.data.seeds",
    "aelab.images": "aelab.analysis.images",
    "aelab.predict": "aelab.deploy.predict",
    "aelab.export": "aelab.deploy.export",
    "aelab.evaluate": "aelab.cli.evaluate",
}

#: names that moved to another module than their old module's new home (old dotted name → new)
MOVED_NAMES: dict[str, str] = {
    "aelab.runs.LoadedRun": "aelab.run.load.LoadedRun",
    "aelab.runs.load_run": "aelab.run.load.load_run",
}


class AelabDeprecationWarning(FutureWarning):
    """An aelab name that moved; shown by default (a ``DeprecationWarning`` would be hidden outside ``__main__``)."""


def current_name(dotted: str) -> str:
    """The 0.2 name of a dotted module or object path written for aelab 0.1 (unchanged when it did not move)."""
    if dotted in MOVED_NAMES:
        return MOVED_NAMES[dotted]
    for old, new in MOVED.items():
        if dotted == old or dotted.startswith(old + "."):
            return new + dotted[len(old) :]
    return dotted


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(
            f"{self.old} moved to {self.new} in aelab 0.2 (extensions: import from aelab.extend); "
            "the old path will be removed in aelab 0.3",
            AelabDeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new)
        for old, new in MOVED_NAMES.items():  # names that moved elsewhere stay reachable under the old module
            if old.rpartition(".")[0] == self.old and not hasattr(module, old.rpartition(".")[2]):
                path, _, name = new.rpartition(".")
                setattr(module, old.rpartition(".")[2], getattr(importlib.import_module(path), name))
        return module

    def exec_module(self, module) -> None:
        """The module was executed at its new place."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(fullname, new))


def install() -> None:
    """Serve the old module paths (once per process)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
