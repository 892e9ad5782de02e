"""Decoding image files into a uint8 array, in worker processes (Pillow and NumPy only, no torch).

Kept apart from :mod:`aelab.data` so that spawned decode workers start in a
fraction of a second instead of importing torch.
"""

from __future__ import annotations

import warnings

import numpy as np

MODES = {1: "L", 3: "RGB"}


def _open(path: str):
    from PIL import Image

    warnings.simplefilter("error", Image.DecompressionBombWarning)
    return Image.open(path)


def scan(paths: list[str]) -> list[tuple[int, int, int] | str]:
    """``(width, height, bands)`` of each file from its header, or the reason it cannot be read."""
    out: list[tuple[int, int, int] | str] = []
    for path in paths:
        try:
            with _open(path) as image:
                gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
                out.append((image.width, image.height, 1 if gray else 3))
        except Exception as exc:  # noqa: BLE001 — every fault becomes a message naming the file
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def decode_into(
    array_path: str,
    start: int,
    paths: list[str],
    size: tuple[int, int] | None,
    channels: int,
    shape: tuple[int, int] | None,
    nearest: bool = False,
) -> list[tuple[int, str]]:
    """Decode ``paths`` into rows ``start..`` of the ``.npy`` at ``array_path`` (opened as a memory map).

    ``size`` ``(height, width)`` resizes (bilinear, antialiased; ``nearest`` for masks);
    without it every image must have ``shape``. Returns ``(row, reason)`` for each
    file that could not be used (unreadable, truncated, another size).
    """
    from PIL import Image

    target = np.load(array_path, mmap_mode="r+")
    bad: list[tuple[int, str]] = []
    for offset, path in enumerate(paths):
        row = start + offset
        try:
            with _open(path) as image:
                image.load()  # a truncated file fails here
                image = image.convert(MODES[channels])
                if size is not None:
                    if (image.height, image.width) != tuple(size):
                        image = image.resize((size[1], size[0]), Image.NEAREST if nearest else Image.BILINEAR)
                elif (image.height, image.width) != tuple(shape):
                    bad.append((row, f"is {image.width}x{image.height}, the others {shape[1]}x{shape[0]}"))
                    continue
                pixels = np.asarray(image, dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 — any file Pillow cannot decode is a bad file, listed by name
            bad.append((row, f"cannot be decoded ({type(exc).__name__}: {exc})"))
            continue
        target[row] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    target.flush()
    del target
    return bad
