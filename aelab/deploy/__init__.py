"""A trained run used outside aelab: predictions on new inputs, exports for other runtimes."""

from __future__ import annotations

from pathlib import Path


def output_folder(out: str | Path | None, default: Path, option: str = "out", run_dir: Path | None = None) -> Path:
    """The folder ``out`` (``default`` when None), created; a file in its place or a folder that cannot be
    written is a ConfigError naming ``option``, before any work is done. A folder inside ``run_dir`` (the run's own
    folder: the default, or an ``out=`` that lies there or is reached through it) is checked the same way either
    way, before anything is created: a symbolic link anywhere in the run folder (or a hard-linked file it writes in
    place) is refused (:func:`aelab.store.files.refuse_links`), and so is any way to ``out`` that passes through a
    link inside the run folder (:func:`aelab.store.files.link_on_the_way`). An ``out=`` of your own, outside every
    run folder, is used as it is."""
    import os
    import tempfile

    from aelab.errors import ConfigError
    from aelab.store.files import link_on_the_way, refuse_links

    folder = Path(out).expanduser() if out else default
    if run_dir is not None:
        run_abs, run_real = Path(os.path.abspath(run_dir)), Path(os.path.realpath(run_dir))
        spelled, real = Path(os.path.abspath(folder)), Path(os.path.realpath(folder))
        inside = spelled == run_abs or run_abs in spelled.parents or real == run_real or run_real in real.parents
        if inside or link_on_the_way(folder, run_dir) is not None:
            refuse_links(run_dir)  # names the first link in the run folder
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
