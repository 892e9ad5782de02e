"""A run's own packages (a researcher's extensions): recorded with the run, found again wherever the run is used.

A run trained with ``hydra.searchpath=[pkg://mylab.conf] model=topk`` names ``mylab.models.TopK``
in its config. :func:`packages_of` records, when the run trains, where each such package was
imported from (``metrics.json``: ``extension_packages``), beside the search path the run was
composed with (``search_path``). ``aelab-eval``, ``aelab-predict``, ``aelab-export``,
``aelab-compare`` and :func:`aelab.load_run` then compose with that search path and import those
packages without being told again (:func:`run_context`): a package that is not importable is
looked for in its recorded folder when that folder exists on this machine, lies outside the run
folder and belongs to the user running the command — a shared run folder, or a colleague's folder on
a lab disk, cannot bring its own code along (``docs/trust.md``). One that is found nowhere is one
line naming the module and how to make it importable.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from aelab.errors import ConfigError

#: packages that are aelab's own or its dependencies: never recorded
_OWN = {"aelab", "torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "hydra", "omegaconf",
        "functools", "builtins", "numpy", "sklearn", "hydra_plugins"}  # fmt: skip


def _home(top: str) -> Path | None:
    """The folder to put on ``sys.path`` to import top-level package ``top``, when it is not an installed one."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    where = Path(next(iter(spec.submodule_search_locations or []), None) or spec.origin or "")
    if not where.parts or any(part in ("site-packages", "dist-packages") for part in where.parts):
        return None  # installed: nothing to record, it imports the same way everywhere it is installed
    return where.parent if spec.submodule_search_locations else where.parent


def packages_of(config: dict[str, Any]) -> dict[str, str]:
    """``{package: folder it was imported from}`` for the run's own (not installed, not aelab's) packages."""
    out = {}
    from aelab.config.trust import config_targets

    for target in sorted({t for _, t in config_targets(config) if isinstance(t, str)}):
        top = target.split(".")[0]
        if top in _OWN or top in out:
            continue
        home = _home(top)
        if home is not None:
            out[top] = str(home.resolve())
    return out


def _usable(home: Path, top: str, run_dir: Path) -> bool:
    """Whether a recorded folder may go on ``sys.path``: it holds the package, lies outside the run folder, and the
    package is this user's own (a shared folder, or a colleague's on a lab disk, cannot bring code along)."""
    found = home / top if (home / top).is_dir() else home / f"{top}.py"
    if not found.exists():
        return False
    home = home.resolve()
    if home == run_dir or run_dir in home.parents:
        return False
    return not hasattr(os, "getuid") or found.stat().st_uid == os.getuid()


def make_importable(packages: dict[str, str], run_dir: Path) -> None:
    """Make the run's recorded packages importable (see the module docstring); one line for one that cannot be."""
    run_dir = Path(run_dir).resolve()
    for top, folder in (packages or {}).items():
        try:
            if importlib.util.find_spec(top) is not None:
                continue
        except (ImportError, ValueError):
            pass
        if _usable(Path(folder), top, run_dir):
            sys.path.append(str(Path(folder)))
            importlib.invalidate_caches()
            continue
        raise ConfigError(
            f"{run_dir} was trained with the package {top!r} (imported then from {folder}), which cannot be imported "
            f"here: install it (pip install -e <its folder>) or add the folder holding it to PYTHONPATH"
        )


def run_context(run_dir: Path) -> list[str]:
    """Prepare to use a run's config here: its packages importable; returns its recorded search path."""
    from aelab.store.record import RunRecord

    record = RunRecord.read(run_dir)
    if record is None:
        return []
    make_importable(record.get("extension_packages") or {}, run_dir)
    return [str(p) for p in record.get("search_path") or []]
