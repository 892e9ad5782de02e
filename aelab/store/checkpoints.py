"""Checkpoint files: never half-written, loaded without running code, and clear errors for ones that are broken.

Every checkpoint aelab reads goes through :func:`load_checkpoint`: ``torch.load(weights_only=True)``, which
rebuilds tensors, numbers, text and containers but no other objects, with the few harmless types Lightning
checkpoints may hold allowed besides (:data:`SAFE_GLOBALS`). A file that needs anything else is refused with
one line naming it and the types; ``trust=True`` (``trust_checkpoint=true`` on the command line) loads it
with full pickle, which runs whatever code the file holds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aelab.errors import ConfigError, DiskFullError, RunFolderError, TrustError
from aelab.store.files import atomic_path


def _safe_globals() -> list:
    """The types besides tensors, numbers, text and containers that a Lightning checkpoint may hold: paths
    (a callback's ``dirpath``), hyperparameter containers (``Namespace``, Lightning's ``AttributeDict``) and
    NumPy scalars (a metric value a callback kept). None of them runs code when rebuilt."""
    import argparse
    import pathlib

    import numpy as np
    from lightning.fabric.utilities.data import AttributeDict

    scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar  # NumPy 2 | 1
    kinds = ("bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64", "complex128")
    dtypes = [type(np.dtype(kind)) for kind in kinds]
    paths = [pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath, pathlib.PureWindowsPath]
    return [*paths, argparse.Namespace, AttributeDict, scalar, np.dtype, *dtypes]


#: the harmless types :func:`load_checkpoint` allows besides torch's own (filled on first use)
SAFE_GLOBALS: list = []

TRUST_HINT = "trust_checkpoint=true"


#: torch's words for a type its weights-only unpickler refuses (anything else it refuses is a damaged file)
_REFUSED_TYPE = re.compile(r"GLOBAL ([\w.]+)|can only (?:build|create new object)|call reduce for unrecognized", re.I)


def _unsafe_types(path: Path, exc: BaseException) -> list[str]:
    """The types a checkpoint holds that a weights-only load refuses, read from its pickle without running it
    (torch's scan) or from the error torch raised; empty when the error is not about types (a damaged file)."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 — not a zip checkpoint, or damaged: torch's error names the type, if any
        found = []
    if found:
        return found
    match = _REFUSED_TYPE.search(str(exc))
    return [match.group(1) or "an object that is not weights"] if match else []


def untrusted_error(path: Path, types: list[str]) -> TrustError:
    """The one-line refusal of a checkpoint whose pickle holds more than weights (``types``)."""
    shown = ", ".join(types[:4]) + (f" and {len(types) - 4} more" if len(types) > 4 else "")
    return TrustError(
        f"checkpoint {path} was refused: it holds {shown}, not only weights, and loading it would run code from the "
        f"file. If you trust where it came from, pass {TRUST_HINT} (aelab.load_run(..., trust_checkpoint=True)), "
        "which loads it with full pickle"
    )


def torch_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False, trust: bool = False) -> Any:
    """``torch.load`` of a checkpoint: weights only (with :data:`SAFE_GLOBALS`) unless ``trust``; a file that
    holds more is a :class:`TrustError` naming it and the types."""
    import pickle

    if not SAFE_GLOBALS:
        SAFE_GLOBALS.extend(_safe_globals())
    if trust:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        types = _unsafe_types(Path(path), exc)
        if types:
            raise untrusted_error(Path(path), types) from None
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer and reader: it writes to a temporary name and renames, and reads weights only.

    A run killed while saving leaves the previous checkpoint intact, never a
    truncated ``last.ckpt``. Loading (``trainer.fit(ckpt_path=...)``, ``trainer.test(ckpt_path="best")``) goes
    through :func:`load_checkpoint`: a checkpoint holding more than weights is refused unless ``trust``.
    """

    def __init__(self, trust: bool = False):
        super().__init__()
        self.trust = bool(trust)

    def load_checkpoint(
        self, path, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location, trust=self.trust)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # closed on any error: its space comes back at once
                torch.save(checkpoint, fh)
        except (OSError, RuntimeError) as exc:
            raise (disk_full_error(Path(path), exc) or exc) from None


def disk_full_error(path: Path, exc: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming the checkpoint ``path`` when ``exc`` is the disk filling up (torch's zip writer
    says "unexpected pos" instead of ENOSPC), or None."""
    import errno
    import shutil

    from aelab.store import files

    full = isinstance(exc, DiskFullError) or files.no_space(exc) is not None
    if not full and "unexpected pos" in str(exc):
        try:
            full = shutil.disk_usage(path.parent).free < 64 * 1024**2
        except OSError:
            full = True
    if not full:
        return None
    last = path.parent / "last.ckpt"
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path and p != last)
    if last.is_file() and last != path:
        kept = f"the last complete checkpoint, {last}, is kept"
    elif path.is_file():
        kept = f"the previous {path.name} is kept"
    elif others:
        kept = f"no earlier {path.name} was written, {others[-1]} is kept"
    else:
        kept = "no earlier checkpoint was written"
    cause = files.no_space(exc) or OSError(errno.ENOSPC, "")
    then = " to continue from the last checkpoint" if last.is_file() else ""
    return files.disk_full_error(path, cause, kept, then=then)


def load_checkpoint(
    path: str | Path, map_location: Any = "cpu", mmap: bool = False, trust: bool = False
) -> dict[str, Any]:
    """Load a Lightning checkpoint, weights only unless ``trust``; a missing, truncated or foreign file is a
    RunFolderError naming it, one that holds more than weights a :class:`TrustError`.

    ``mmap=True`` maps the tensors instead of reading them: a cheap check that
    the file is whole before Lightning loads it for real.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"checkpoint {path} does not exist")
    try:
        state = torch_load(path, map_location=map_location, mmap=mmap, trust=trust)
    except TrustError:
        raise
    except Exception as exc:  # noqa: BLE001 — truncated zip, unpickling error, EOF ...
        raise RunFolderError(
            f"checkpoint {path} is truncated or corrupt and cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). "
            "To train that run again from the start, delete its run folder (or use another name=); to start from a "
            "good checkpoint instead, pass ckpt_path=<file> (it trains into a new run folder)."
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise RunFolderError(f"checkpoint {path} is not a Lightning checkpoint (it has no state_dict)")
    return state


def newest_resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest of ``last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt`` in ``ckpt_dir`` and its run folder."""
    candidates = [ckpt_dir / "last.ckpt", *ckpt_dir.parent.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def resume_checkpoint(run_dir: Path, ckpt_path: str | None, resume: str) -> Path | None:
    """The checkpoint a run starts from: ``ckpt_path``, or with ``resume=auto`` the run folder's own newest one.

    ``resume=never`` refuses a folder that already holds checkpoints. The file is not read here: the pre-run
    step (:func:`aelab.run.precheck.resume_from`) loads it once, weights only, to check it.
    """
    if ckpt_path:
        path = Path(str(ckpt_path)).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path={ckpt_path} does not exist; point it at a checkpoint such as <run>/checkpoints/last.ckpt"
            )
    elif resume == "never":
        if any((run_dir / "checkpoints").glob("*.ckpt")):
            raise ConfigError(
                f"{run_dir} already holds checkpoints and resume=never: delete the folder, "
                "choose another name=, or leave resume=auto to continue that run"
            )
        return None
    else:
        path = newest_resume_checkpoint(run_dir / "checkpoints")
    return path
