"""A trained run used outside aelab: predictions on new inputs, exports for other runtimes."""

from __future__ import annotations

from pathlib import Path


def output_folder(out: str | Path | None, default: Path, option: str = "out") -> Path:
    """The folder ``out`` (``default`` when None), created; a file in its place or a folder that cannot be
    written is a ConfigError naming ``option``, before any work is done."""
    import tempfile

    from aelab.errors import ConfigError

    folder = Path(out).expanduser() if out else default
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".aelab-write-test-"):
            pass
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"{option}={folder} is a file (or lies under one), not a folder: name a folder to write into"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{option}={folder} cannot be written ({exc.strerror or exc}): name a folder you can write to"
            + ("" if out else f" with {option}=<folder>")
        ) from None
    return folder
