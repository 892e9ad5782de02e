"""Readers for the on-disk formats of the real datasets, straight into uint8 tensors.

torchvision's dataset classes check MD5 sums of the archives they download;
Debian's ``dataset-fashion-mnist`` recompresses the IDX files, so aelab reads
the files itself (gzip or plain) instead of going through those classes.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from aelab.errors import DataFileError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (``.gz`` or uncompressed) into a tensor of its stored shape (decoded once, then cached).

    A file that cannot be used is one :class:`DataFileError` naming it and what is wrong with it.
    """
    from aelab.data.cache import decoded_file

    try:
        return torch.from_numpy(decoded_file(Path(path), _decode_idx))
    except PermissionError:
        raise DataFileError(f"{path} cannot be read: permission denied (check its owner and mode)") from None
    except EOFError:
        raise DataFileError(
            f"{path} is truncated: the compressed stream ends early (download or copy it again)"
        ) from None
    except gzip.BadGzipFile as exc:
        raise DataFileError(f"{path} is not a gzip file ({exc}); a .gz IDX file must be gzip-compressed") from None
    except (ValueError, OSError, zlib.error) as exc:
        raise DataFileError(f"{path} is not a usable IDX file: {exc}") from None


def _decode_idx(path: Path) -> np.ndarray:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("bad magic number (not an IDX file)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _IDX_DTYPES:
        raise ValueError(f"unknown IDX element type 0x{dtype_code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=header)
    expected = int(np.prod(shape))
    if array.size != expected:
        raise ValueError(f"the header says {expected} values, the file holds {array.size} (truncated?)")
    return np.array(array.reshape(shape), dtype=array.dtype.newbyteorder("="))  # copy, native byte order


#: what CIFAR-10's python batches hold: dicts of numpy arrays, lists, bytes and strings — nothing else may be built
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # the latin-1 bytes of an array pickled with protocol 2
    ("numpy.core.numeric", "_frombuffer"),  # an array pickled with protocol 5 (a batch written again by numpy)
    ("numpy._core.numeric", "_frombuffer"),
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds the arrays, lists, dicts, bytes and strings of a CIFAR-10 batch and refuses every
    other global: a batch file from a shared folder is data, and ``pickle.load`` would run what it names."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds")


def read_cifar_batches(folder: str | Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR-10 python-pickle batches into ``uint8 [N,3,32,32]`` images and ``int64`` labels.

    The batches are read with a restricted unpickler (:class:`_CifarUnpickler`): a file that names anything but
    numpy arrays is refused with a :class:`DataFileError` naming it, and nothing it names is run.
    """
    images, labels = [], []
    for name in names:
        path = Path(folder) / name
        try:
            with open(path, "rb") as fh:
                entry = _CifarUnpickler(fh, encoding="latin1").load()
            if not isinstance(entry, dict) or "data" not in entry:
                raise ValueError(f"it holds a {type(entry).__name__}, not a dict with 'data' and 'labels'")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = list(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except FileNotFoundError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataFileError(f"{path} is not a CIFAR-10 batch: {exc}") from None
        images.append(data)
        labels.extend(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)
