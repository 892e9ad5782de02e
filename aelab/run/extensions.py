"""A run's own packages (a researcher's extensions): recorded with the run, found again wherever the run is used.

A run trained with ``hydra.searchpath=[pkg://mylab.conf] model=topk`` names ``mylab.models.TopK``
in its config. :func:`packages_of` records, when the run trains, where each such package was
imported from (``metrics.json``: ``extension_packages``), beside the search path the run was
composed with (``search_path``). ``aelab-eval``, ``aelab-predict``, ``aelab-export``,
``aelab-compare`` and :func:`aelab.load_run` then compose with that search path and import those
packages (:func:`run_context`). A recorded folder is data someone else may have written, so a package that
is not importable is imported from it only when the user names the package (``trust_packages=[mylab]``,
``aelab.load_run(..., trust_packages=["mylab"])`` or ``AELAB_TRUST_PACKAGES=mylab``) and the folder is
absolute, resolves (symbolic links followed) outside every run and sweep folder, and belongs to the user
running the command — a shared run folder, a sweep folder with a package beside its jobs, or a colleague's
folder on a lab disk cannot bring its own code along (``docs/trust.md``). Anything else is one line naming
the package, the folder and how to make it importable.
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


#: what marks a folder as a run or a sweep folder (code found under one came with the data)
_RUN_MARKS = ("metrics.json", "multirun.yaml", "aelab_sweep.yaml", "optuna.journal", ".aelab.lock")


def _problem(home: Path, top: str, run_dir: Path) -> str | None:
    """Why a recorded folder may not go on ``sys.path`` (None when it may): it must be absolute, hold the package,
    resolve outside the run folder and every run or sweep folder above it, and the package must be this user's."""
    if not home.is_absolute():
        return "a relative path (it would be read from wherever the command runs)"
    real = Path(os.path.realpath(home))
    found = real / top if (real / top).is_dir() else real / f"{top}.py"
    if not found.exists():
        return "not there on this machine"
    if real == run_dir or run_dir in real.parents:
        return "inside the run folder"
    if any((folder / mark).exists() for folder in (real, *real.parents) for mark in _RUN_MARKS):
        return "inside a run or sweep folder"
    if hasattr(os, "getuid") and found.stat().st_uid != os.getuid():
        return "owned by another user"
    return None


def make_importable(packages: dict[str, str], run_dir: Path, trusted: list[str] | None = None) -> None:
    """Make the run's recorded packages importable (see the module docstring); one line for one that cannot be.

    ``trusted``: the packages the user named (default: ``$AELAB_TRUST_PACKAGES``)."""
    from aelab.config.trust import TRUST_ENV, trusted_packages

    trusted = trusted_packages() if trusted is None else trusted
    run_dir = Path(run_dir).resolve()
    for top, folder in (packages or {}).items():
        try:
            if importlib.util.find_spec(top) is not None:
                continue
        except (ImportError, ValueError):
            pass
        home = Path(str(folder))
        problem = _problem(home, top, run_dir)
        if problem is None and top in trusted:
            sys.path.append(os.path.realpath(home))
            importlib.invalidate_caches()
            continue
        way = "install it (pip install -e <its folder>) or add the folder holding it to PYTHONPATH"
        if problem is None:
            way += f"; or, if you trust it, name it: trust_packages=[{top}] (or {TRUST_ENV}={top})"
            problem = "not imported from there unless you name the package"
        raise ConfigError(
            f"{run_dir} was trained with the package {top!r} (recorded at {folder}: {problem}), which cannot be "
            f"imported here: {way}"
        )


def run_context(run_dir: Path, trusted: list[str] | None = None) -> list[str]:
    """Prepare to use a run's config here: its packages importable (``trusted``: the packages the user named, see
    :func:`make_importable`); returns its recorded search path."""
    from aelab.store.record import RunRecord

    record = RunRecord.read(run_dir)
    if record is None:
        return []
    make_importable(record.get("extension_packages") or {}, run_dir, trusted)
    return [str(p) for p in record.get("search_path") or []]
