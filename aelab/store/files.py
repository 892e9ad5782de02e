"""Files that are never half-written: every writer in aelab goes through :func:`atomic_path`.

A writer gets a temporary name next to the target (same folder, so the rename
is atomic on one file system, same suffix, so tools that pick a format from
the suffix still work) and the file appears under its real name only when
the writer finished. On any exit path the temporary file is removed, and the
new file gets the permissions the umask gives (``tempfile`` would make it
0600).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name next to ``path``; on success it is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as exc:
        full = None if _is_disk_full_error(exc) else disk_full_error(path, exc)
        if full is None:
            raise
        raise full from exc
    finally:
        tmp.unlink(missing_ok=True)


#: a full disk, or a full quota on it
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _is_disk_full_error(exc: BaseException) -> bool:
    from aelab.errors import DiskFullError

    return isinstance(exc, DiskFullError)


def no_space(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` of a full disk (``ENOSPC``, or ``EDQUOT``: a full quota) in ``exc``'s cause/context chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_error(path: str | Path, exc: BaseException, kept: str | None = None, then: str = ""):
    """A :class:`aelab.errors.DiskFullError` naming ``path`` when ``exc`` is (or was caused by) the disk filling up,
    else None: one line, the file, the cause, what is kept (``kept``; by default the earlier file at ``path``, when
    there is one) and what to do."""
    from aelab.errors import DiskFullError

    full = no_space(exc)
    if full is None:
        return None
    path = Path(path)
    if kept is None and path.is_file():
        kept = f"the earlier {path.name} is kept"
    where = f"in {path}" if path.is_dir() else str(path)  # a library's write that did not say which file
    return DiskFullError(
        f"{os.strerror(full.errno).lower()} while writing {where}"
        + (f": {kept}" if kept else "")
        + f". Free some space on that disk and run the same command again{then}"
    )


def written_file(exc: BaseException) -> Path | None:
    """The file a failed write was writing, as far as the error tells: its ``filename``, else an open file in the
    innermost frames of its traceback (a library's writer); a temporary of :func:`atomic_path` is named by its
    target."""
    import io

    path = getattr(exc, "filename", None)
    if not path:
        frames, tb = [], exc.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in reversed(frames):
            for value in frame.f_locals.values():
                if isinstance(value, io.IOBase):
                    name = getattr(value, "name", None)
                else:  # fsspec's local file (Lightning's CSV writer)
                    name = getattr(value, "path", None) if type(value).__name__ == "LocalFileOpener" else None
                if isinstance(name, (str, os.PathLike)):
                    path = name
                    break
            if path:
                break
    if not path:
        return None
    path = Path(os.fsdecode(path))
    if is_temporary(path):
        stem = path.stem[1:].rpartition(TMP_MARK)[0]
        path = path.with_name(stem + path.suffix)
    return path


#: folders of a run folder that other programs own (W&B keeps its own links there: latest-run, debug.log)
_NOT_OURS = ("wandb",)


def linked_paths(folder: Path) -> list[Path]:
    """The symbolic links at or inside ``folder`` (not followed; the folder itself counts; inside W&B's own folders
    nothing counts, but such a folder that is itself a link does)."""
    folder = Path(folder)
    if folder.is_symlink():
        return [folder]
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        found += [here / name for name in (*dirs, *files) if (here / name).is_symlink()]
        dirs[:] = [d for d in dirs if d not in _NOT_OURS]
    return sorted(found)


#: files aelab (or Hydra's log for it) writes in place in a run or sweep folder — appended to, truncated — rather than
#: replacing them atomically: a hard link there would write into the file's other name
IN_PLACE = (".aelab.lock", "train.log", "metrics.csv", "optuna.journal", "multirun.yaml")


def hard_linked(folder: Path) -> list[Path]:
    """The files written in place (:data:`IN_PLACE`) at or inside ``folder`` that have other names (``st_nlink > 1``;
    W&B's folders left alone, as in :func:`linked_paths`)."""
    found = []
    for root, dirs, files in os.walk(Path(folder), followlinks=False):
        for name in files:
            if name in IN_PLACE:
                path = Path(root) / name
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                    found.append(path)
        dirs[:] = [d for d in dirs if d not in _NOT_OURS]
    return sorted(found)


def _hard_link_message(path: Path, links: int) -> str:
    return (
        f"{path} is a hard link (the same file has {links - 1} other name(s), perhaps outside this folder): aelab "
        "appends to or truncates it in place, which would change that other file too; replace it with a copy of "
        f"its own (cp {path} {path}.copy && mv {path}.copy {path}), or work on a copy of the folder"
    )


def refuse_links(folder: str | Path) -> None:
    """Refuse (:class:`aelab.errors.RunFolderError`, one line naming it) a run or sweep folder that is or holds a
    symbolic link, or whose files written in place (:data:`IN_PLACE`: the lock, logs, the CSV) are hard links: aelab
    appends to its logs, truncates its CSV and lock, and writes checkpoints, exports and samples inside it, and
    through a link any of these would land in a file of someone else's choosing."""
    from aelab.errors import LinkedFileError

    links = linked_paths(Path(folder))
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise LinkedFileError(
            f"{links[0]} is a symbolic link (to {os.readlink(links[0])!r}){more}: aelab writes nothing through a link "
            "in a run or sweep folder, where a shared or copied folder could point it at any file of yours; replace "
            "it with the file or folder itself, or work on a copy without links"
        )
    hard = hard_linked(Path(folder))
    if hard:
        raise LinkedFileError(_hard_link_message(hard[0], hard[0].lstat().st_nlink))


def link_on_the_way(path: str | Path, folder: str | Path) -> Path | None:
    """The first symbolic link inside ``folder`` that reaching ``path`` goes through (each link followed as the
    system would, one component at a time), or None: ``out=<run>/predict/x`` with ``predict`` a link, or a link of
    yours that leads into the run folder and on through one of its links."""
    root = Path(os.path.realpath(folder))
    parts, current, hops = list(Path(os.path.abspath(path)).parts[1:]), Path("/"), 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        step = current / part
        if not step.is_symlink():
            current = step
            continue
        if current == root or root in current.parents:
            return step
        hops += 1
        if hops > 40:  # a loop: mkdir says so itself
            return None
        target = Path(os.readlink(step))
        parts = [*(target.parts[1:] if target.is_absolute() else target.parts), *parts]
        current = Path("/") if target.is_absolute() else current
    return None


def open_in_place(path: str | Path, mode: str = "a", **options: Any):
    """Open ``path`` for writing in place (``"a"``: append, ``"w"``: truncate; ``options`` go to :func:`open`) —
    never through a symbolic link (``O_NOFOLLOW``, checked when it opens, so a link put in its place during a run is
    refused too) and never a file with other names (a hard link): each a :class:`aelab.errors.LinkedFileError`
    naming it (an ``OSError`` as well, for writers that tolerate a failed write). Every in-place write aelab does in
    a run or sweep folder goes through here; everything else is replaced atomically (:func:`atomic_path`)."""
    from aelab.errors import LinkedFileError

    if mode.replace("b", "") not in ("a", "w"):
        raise ValueError(f"open_in_place takes 'a' or 'w' (and 'b'), not {mode!r}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_APPEND if mode.startswith("a") else 0
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise LinkedFileError(
            f"{path} is a symbolic link (to {os.readlink(path)!r}): aelab writes nothing through a link in a run or "
            "sweep folder; replace it with the file itself"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise LinkedFileError(
            _hard_link_message(Path(path), info.st_nlink)
            if stat.S_ISREG(info.st_mode)
            else f"{path} is not a regular file: aelab writes its own file there"
        )
    if mode.startswith("w"):
        os.ftruncate(fd, 0)  # after the checks: a hard-linked file is never truncated
    return os.fdopen(fd, mode, **options)


class NoFollowFileHandler(logging.FileHandler):
    """Hydra's ``train.log`` handler (``conf/hydra/default.yaml``), opened with :func:`open_in_place`. A link or a
    hard link in its place is not written at all (the log goes nowhere); the run's own check then refuses the
    folder with one line naming it (:func:`refuse_links`), before anything else is written."""

    def _open(self):
        try:
            return open_in_place(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors)
        except OSError:  # LinkedFileError, or a folder that cannot be written: the run's checks say which
            return open(os.devnull, "a", encoding=self.encoding)  # noqa: SIM115 — the handler closes it


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a leftover temporary file of :func:`atomic_path`."""
    return path.name.startswith(".") and TMP_MARK in path.name


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the leftover temporary files of :func:`atomic_path` in ``folder``, ``checkpoints/`` and ``.hydra/``.

    Call only while owning the folder (:mod:`aelab.store.locks`): every temporary file is then a dead process's.
    """
    removed = []
    for sub in (folder, folder / "checkpoints", folder / ".hydra"):
        if sub.is_dir():
            for path in sub.iterdir():
                if is_temporary(path) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def remove_dead_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``folder`` whose writer (the PID in the name) is no longer
    running: what a killed process left, safe without owning the folder (a live writer's files are kept)."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if not (is_temporary(path) and path.is_file()):
            continue
        pid = path.stem.rpartition(TMP_MARK)[2]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a full disk: a
    :class:`aelab.errors.DiskFullError` naming ``path``; the earlier file is kept)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_safe(value: Any) -> Any:
    """A JSON-safe copy: NaN/inf become None, tensors and NumPy scalars plain numbers, paths strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON so that a crash never leaves a half-written file."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2) + "\n")


def user_cache_dir() -> Path:
    """Where aelab keeps what it can recompute: ``$AELAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/aelab``, else
    ``~/.cache/aelab``.
    """
    if os.environ.get("AELAB_CACHE_DIR"):
        return Path(os.environ["AELAB_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aelab"


def save_figure(fig, path: Path, dpi: int = 110, vector: str | None = "pdf", **options: Any) -> Path:
    """Write a matplotlib figure to ``path`` (PNG by the suffix) and, with ``vector``, to the same name with that
    suffix (``pdf`` or ``svg``: text and lines stay sharp at any size in a paper), each atomically; close it.

    ``options`` go to ``savefig`` (``bbox_inches="tight"``, ...). Returns ``path``.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    targets = [path]
    if vector and path.suffix.lstrip(".") != vector:
        targets.append(path.with_suffix(f".{vector}"))
    try:
        for target in targets:
            with atomic_path(target) as tmp:
                fig.savefig(tmp, dpi=dpi, format=target.suffix.lstrip(".") or "png", **options)
    finally:
        plt.close(fig)
    return path
