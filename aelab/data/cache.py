"""Decoded image files cached as one uint8 ``.npy``, memory-mapped, keyed by the files and the decode settings.

The key hashes every file's relative path, size and modification time plus the
settings (size, channels): change a file and the next run decodes again. A
cache is written under a temporary name and renamed; its ``.json`` (the file
list, written last) is what makes it valid, so a run killed while decoding
leaves nothing that a later run would use. A lock file keeps two processes
(DDP ranks, parallel sweep jobs) from decoding the same set at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from aelab.store.files import atomic_path, user_cache_dir, write_json_atomic
from aelab.store.locks import locked

log = logging.getLogger(__name__)

SERIAL_BELOW = 1500  # files: decoded in this process (starting workers costs more than it saves)


def _context():
    """Fork where there is fork: workers start at once and never re-run the user's script (spawn re-imports
    ``__main__``, which breaks scripts without an ``if __name__ == "__main__"`` guard). The workers use only
    Pillow and NumPy, so forking a process with torch threads is safe."""
    import multiprocessing

    return get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def file_key(files: list, settings: dict) -> str:
    """A hash of the files (``.rel``, ``.size``, ``.mtime_ns``: relative path, size, modification time) and the
    settings."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update("".join(f"{f.rel}\0{f.size}\0{f.mtime_ns}\n" for f in files).encode())
    return h.hexdigest()[:20]


def load_cached(stem: Path) -> tuple[dict, np.ndarray] | None:
    """The metadata and memory-mapped array of a complete cache at ``stem`` (``.json`` + ``.npy``), else None."""
    meta_path, array_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(array.shape) != meta.get("shape") or str(array.dtype) != meta.get("dtype"):
        return None
    return meta, array


def decode_files(
    paths: list[str],
    array_path: Path,
    shape: tuple[int, ...],
    size: tuple[int, int] | None,
    image_shape: tuple[int, int] | None,
    workers: int,
    nearest: bool = False,
) -> list[tuple[int, str]]:
    """Decode ``paths`` into a new ``.npy`` of ``shape`` at ``array_path``, in parallel; returns the bad rows."""
    from aelab.data.decode import decode_into

    array = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.uint8, shape=shape)
    del array
    channels = shape[1]
    if len(paths) < SERIAL_BELOW or workers <= 1:
        return decode_into(str(array_path), 0, paths, size, channels, image_shape, nearest)
    chunk = max(256, len(paths) // (workers * 8))
    bad: list[tuple[int, str]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        jobs = [
            pool.submit(
                decode_into, str(array_path), start, paths[start : start + chunk], size, channels, image_shape, nearest
            )
            for start in range(0, len(paths), chunk)
        ]
        for job in jobs:
            bad += job.result()
    return sorted(bad)


def scan_files(paths: list[str], workers: int) -> list[tuple[int, int, int] | str]:
    """The header (width, height, bands) of every file, or why it cannot be read, in parallel."""
    from aelab.data.decode import scan

    if len(paths) < SERIAL_BELOW or workers <= 1:
        return scan(paths)
    chunk = max(256, len(paths) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        parts = pool.map(scan, [paths[i : i + chunk] for i in range(0, len(paths), chunk)])
        return [item for part in parts for item in part]


def build_cache(stem: Path, build: Callable[[Path], dict]) -> tuple[dict, np.ndarray]:
    """The cache at ``stem``, built by ``build(tmp_array_path) -> metadata`` unless a complete one exists."""
    found = load_cached(stem)
    if found is not None:
        return found
    with locked(stem.with_suffix(".lock")):
        found = load_cached(stem)  # built by another process while this one waited
        if found is not None:
            return found
        with atomic_path(stem.with_suffix(".npy")) as tmp:
            meta = build(tmp)
        array = np.load(stem.with_suffix(".npy"), mmap_mode="r")
        meta.update({"shape": list(array.shape), "dtype": str(array.dtype)})
        write_json_atomic(stem.with_suffix(".json"), meta)  # last: the cache is valid from here on
    log.info("cached %d decoded images in %s (%.1f MB)", array.shape[0], stem.with_suffix(".npy"), array.nbytes / 2**20)
    return meta, array


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def decoded_file(path: Path, decode: Callable[[Path], np.ndarray]) -> np.ndarray:
    """``decode(path)``, kept as an ``.npy`` in the user cache keyed by the file's path, size and modification time.

    Decompressing Fashion-MNIST's gzipped IDX files takes about 0.45 s of every run's start-up; the
    cached array loads in a few milliseconds. An unwritable cache only costs the saving.
    """
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20]
    cached = user_cache_dir() / "decoded" / f"{path.name}-{key}.npy"
    try:
        return np.load(cached)
    except (OSError, ValueError):
        pass
    array = decode(path)
    try:
        with atomic_path(cached) as tmp:
            np.save(tmp, array)
    except OSError as exc:
        log.debug("could not cache %s: %s", path, exc)
    return array
