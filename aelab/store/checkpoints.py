"""Checkpoint files that are never half-written, and clear errors for ones that are broken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aelab.errors import ConfigError, DiskFullError, RunFolderError
from aelab.store.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing to a temporary name and renaming.

    A run killed while saving leaves the previous checkpoint intact, never a
    truncated ``last.ckpt``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # closed on any error: its space comes back at once
                torch.save(checkpoint, fh)
        except (OSError, RuntimeError) as exc:
            raise (disk_full_error(Path(path), exc) or exc) from None


def disk_full_error(path: Path, exc: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` when ``exc`` is the disk filling up (torch's zip writer says
    "unexpected pos" instead of ENOSPC), or None."""
    import errno
    import shutil

    full = getattr(exc, "errno", None) == errno.ENOSPC
    if not full and "unexpected pos" in str(exc):
        try:
            full = shutil.disk_usage(path.parent).free < 64 * 1024**2
        except OSError:
            full = True
    if not full:
        return None
    last = path.parent / "last.ckpt"
    kept = (
        f"the last complete checkpoint, {last}, is kept"
        if last.is_file() and last != path
        else (f"the previous {path.name} is kept" if path.is_file() else "no earlier checkpoint was written")
    )
    return DiskFullError(
        f"no space left on device while writing {path}: {kept}. Free some space on that disk "
        "and run the same command again to continue from the last checkpoint"
    )


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` a Lightning checkpoint; a missing, truncated or foreign file is a RunFolderError naming it.

    ``mmap=True`` maps the tensors instead of reading them: a cheap check that
    the file is whole before Lightning loads it for real.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
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

    Checked readable (a truncated file is named before anything starts); ``resume=never`` refuses a
    folder that already holds checkpoints.
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
    if path is not None:
        load_checkpoint(path, mmap=True)
    return path
