"""Locks: one live writer per run folder and per sweep folder, and short exclusive sections (:func:`locked`).

A process that writes a folder holds an exclusive ``flock`` on ``<folder>/.aelab.lock``,
a small JSON file naming the owner (PID, host, start time, command). A second process
is refused with a message naming that owner. The kernel drops the lock when its owner
dies, however it dies (SIGKILL, a lost node), so a stale lock never needs cleaning: the
next process simply takes it over. The same test tells readers whether a run recorded as
``running`` still has a live process (:func:`owner_alive`); if not, it was interrupted.

The file descriptor is close-on-exec, so processes started with ``exec`` never inherit it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aelab.errors import AelabError

LOCK_FILE = ".aelab.lock"

_held: dict[Path, FolderLock] = {}


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Wait for and hold an exclusive ``flock`` on the lock file ``path`` (created if needed) for the block.

    For short sections two processes must not run at once — decoding one image cache, creating one
    MLflow store. The kernel drops it when the holder dies, as for :class:`FolderLock`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class FolderInUse(AelabError):
    """Another live process owns the folder."""


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"])) if owner.get("started") else "?"
    return f"process {owner.get('pid', '?')} on {owner.get('host', '?')} (since {since}: {owner.get('command', '?')})"


class FolderLock:
    """An exclusive, owner-naming lock on ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path, what: str = "run folder"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: the lock is truncated and written, and a link could name any file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise FolderInUse(
                f"{self.path} is a symbolic link (to {os.readlink(self.path)}): aelab writes nothing through a link "
                f"in a {self.what}; remove it (the lock file is aelab's own)"
            ) from None
        links = os.fstat(fd).st_nlink
        if links > 1:  # a hard link: truncating and writing the lock would change the file's other name too
            os.close(fd)
            raise FolderInUse(
                f"{self.path} is a hard link (the same file has {links - 1} other name(s), perhaps outside this "
                f"{self.what}): aelab truncates and writes its lock file; remove it (the lock file is aelab's own)"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise in_use(self.folder, self.what) from None
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None
        _held.pop(self.folder.resolve(), None)


def is_extra_rank() -> bool:
    """Whether this process is a DDP rank other than 0 (started by Lightning or SLURM): it joins rank 0's folder."""
    return any(os.environ.get(k) not in (None, "0") for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def lock_folder(folder: Path, what: str = "run folder") -> FolderLock:
    """Own ``folder`` for this process (again: a no-op); raises :class:`FolderInUse` naming the live owner."""
    key = Path(folder).resolve()
    if key not in _held:
        _held[key] = FolderLock(key, what).acquire()
    return _held[key]


def release_folder(folder: Path) -> None:
    lock = _held.get(Path(folder).resolve())
    if lock is not None:
        lock.release()


def in_use(folder: Path, what: str = "run folder") -> FolderInUse:
    """The refusal of a folder another live process owns, naming that owner."""
    return FolderInUse(
        f"the {what} {folder} is in use by {_owner_text(Path(folder) / LOCK_FILE)}. Two processes writing one folder "
        "would mix their checkpoints and logs: wait for it to finish (or stop it), or use another "
        + ("name=..." if what == "run folder" else "sweep.name=...")
    )


def owned_elsewhere(folder: Path) -> bool:
    """Whether another live process (not this one) holds ``folder``'s lock: a quick test before any work."""
    return Path(folder).resolve() not in _held and owner_alive(folder)


def owner_alive(folder: Path) -> bool:
    """Whether a live process (this one included) holds ``folder``'s lock."""
    key = Path(folder).resolve()
    if key in _held:
        return True
    path = key / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False
