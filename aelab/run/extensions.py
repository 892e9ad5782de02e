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


def _place_problem(real: Path, run_dir: Path) -> str | None:
    """Why a resolved folder (or file) may not be read code or configs from: inside the run folder, or inside a run
    or sweep folder (one holding a run's or sweep's marks) at or above it."""
    if real == run_dir or run_dir in real.parents:
        return f"it resolves to {real}, inside the run folder"
    if any((folder / mark).exists() for folder in (real, *real.parents) for mark in _RUN_MARKS):
        return f"it resolves to {real}, inside a run or sweep folder"
    return None


def _problem(home: Path, top: str, run_dir: Path) -> str | None:
    """Why a recorded folder may not go on ``sys.path`` (None when it may): it must be absolute, hold the package,
    resolve outside the run folder and every run or sweep folder above it, and the package must be this user's."""
    if not home.is_absolute():
        return "a relative path (it would be read from wherever the command runs)"
    real = Path(os.path.realpath(home))
    found = real / top if (real / top).is_dir() else real / f"{top}.py"
    place = _place_problem(real, run_dir) or (_place_problem(Path(os.path.realpath(found)), run_dir))
    if place:
        return place
    if not found.exists():
        return "not there on this machine"
    if hasattr(os, "getuid") and found.stat().st_uid != os.getuid():
        return "owned by another user"
    return None


#: the environment variable naming config folders (``file://`` search-path entries) a run may bring back
TRUST_CONFIG_ENV = "AELAB_TRUST_CONFIG_DIRS"


def trusted_config_dirs() -> list[str]:
    """The config folders the user names in ``$AELAB_TRUST_CONFIG_DIRS`` (``os.pathsep``-separated), resolved."""
    named = os.environ.get(TRUST_CONFIG_ENV, "").split(os.pathsep)
    return [os.path.realpath(os.path.expanduser(p)) for p in named if p.strip()]


def usable_search_path(entries: list[str], run_dir: Path) -> list[str]:
    """A run's recorded search path (``metrics.json``: ``search_path``), checked as its package folders are: a
    ``pkg://`` entry names a package, imported under :func:`make_importable`'s rules; a ``file://`` entry (a folder of
    configs, whose ``_target_``s aelab would build) is used only when it is absolute, resolves outside the run folder
    and every run or sweep folder above it, belongs to the user, and the user names it
    (``$AELAB_TRUST_CONFIG_DIRS``, or ``hydra.searchpath=[...]`` on the command line instead of the recorded one).
    Anything else is a :class:`ConfigError`, one line naming the entry."""
    run_dir = Path(run_dir).resolve()
    out = []
    for entry in entries:
        entry = str(entry)
        if entry.startswith("pkg://"):
            out.append(entry)
            continue
        folder = Path(entry.removeprefix("file://"))
        if not folder.is_absolute():
            problem = "a relative path (it would be read from wherever the command runs)"
        else:
            real = Path(os.path.realpath(folder))
            problem = _place_problem(real, run_dir)
            if problem is None and not real.is_dir():
                problem = "not there on this machine"
            elif problem is None and hasattr(os, "getuid") and real.stat().st_uid != os.getuid():
                problem = "owned by another user"
            elif problem is None and str(real) not in trusted_config_dirs():
                problem = f"not read unless you name it ({TRUST_CONFIG_ENV}={real})"
        if problem:
            raise ConfigError(
                f"{run_dir / 'metrics.json'}: search_path entry {entry!r} was refused: {problem}. A config folder "
                "recorded by a run is data, and its configs could name any code; to use your own config folder, "
                f"pass hydra.searchpath=[file:///absolute/folder] or set {TRUST_CONFIG_ENV}"
            )
        out.append(entry)
    return out


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


def run_context(run_dir: Path, trusted: list[str] | None = None, search_path: bool = True) -> list[str]:
    """Prepare to use a run's config here: its packages importable (``trusted``: the packages the user named, see
    :func:`make_importable`); returns its recorded search path, checked (:func:`usable_search_path`; with
    ``search_path=False`` — the user gave their own — neither checked nor returned)."""
    from aelab.store.record import RunRecord

    record = RunRecord.read(run_dir)
    if record is None:
        return []
    make_importable(record.get("extension_packages") or {}, run_dir, trusted)
    if not search_path:
        return []
    recorded = record.get("search_path") or []
    if not isinstance(recorded, list):
        raise ConfigError(f"{Path(run_dir) / 'metrics.json'}: search_path is not a list: the run folder is damaged")
    return usable_search_path([str(p) for p in recorded], run_dir)
