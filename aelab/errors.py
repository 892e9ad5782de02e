"""Errors that carry a message meant for the person running aelab.

Entry points catch :class:`AelabError` (also when Hydra's ``instantiate``
wrapped it) and print its message instead of a traceback.
"""

from __future__ import annotations


class AelabError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ConfigError(AelabError, ValueError):
    """A config value is invalid (unknown choice, out-of-range number, ...)."""


class DatasetNotFoundError(AelabError, FileNotFoundError):
    """The dataset files were found nowhere aelab looked and could not be downloaded."""


class NonFiniteLossError(AelabError, FloatingPointError):
    """The training loss became NaN or infinite."""


class RunFolderError(AelabError):
    """A run or sweep folder is missing, incomplete or of the wrong kind."""


class LinkedFileError(RunFolderError, OSError):
    """A file aelab would write in place inside a run or sweep folder is a symbolic link or has other names (a hard
    link): writing it would change a file elsewhere (see ``docs/trust.md``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrustError(AelabError):
    """A file read from a run folder would run code to be loaded (a pickled object in a checkpoint, a config
    ``_target_`` outside the allowlist): refused unless trusted explicitly (see ``docs/trust.md``)."""


def find_aelab_error(exc: BaseException | None) -> AelabError | None:
    """Return the first :class:`AelabError` in ``exc``'s cause/context chain.

    Hydra's ``instantiate`` wraps exceptions raised by constructors in an
    ``InstantiationException``; the original is its ``__cause__``.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, AelabError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class DataFileError(AelabError, OSError):
    """A data file that exists but cannot be used: truncated, not the format, unreadable."""


class DiskFullError(AelabError, OSError):
    """The disk filled up while aelab was writing a file; what was written before is kept."""
