"""A trained run used outside aelab: predictions on new inputs, exports for other runtimes."""

from __future__ import annotations

from pathlib import Path


def output_folder(out: str | Path | None, default: Path, option: str = "out", run_dir: Path | None = None) -> Path:
    """The folder ``out`` (``default`` when None), created; a file in its place or a folder that cannot be
    written is a ConfigError naming ``option``, before any work is done. Writing by default into ``run_dir`` (the
    run's own folder), a symbolic link anywhere in it is refused first (:func:`aelab.store.files.refuse_links`)."""
    import tempfile

    from aelab.errors import ConfigError
    from aelab.store.files import refuse_links

    if not out and run_dir is not None:
        refuse_links(run_dir)
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
