"""The file-backed datasets — Fashion-MNIST, MNIST, CIFAR-10 — found by a search over folders, then a download.

Each is a subclass of :class:`~aelab.data.datamodule.ImageDataModule` with a
:class:`FileSource` (its shape, its files, where to look for them). The search order is

1. the configured data root (``data.root``), in the folder names listed by the
   source (torchvision's own layout among them),
2. ``/usr/share/datasets/<debian name>`` (Debian's ``dataset-*`` packages),
3. a torchvision download into the data root when ``data.download=true``.

When all fail, :class:`~aelab.errors.DatasetNotFoundError` names every place
searched and how to get the files.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aelab.config.signatures import check_arguments
from aelab.data.datamodule import ImageDataModule, ImageSet
from aelab.data.readers import read_cifar_batches, read_idx
from aelab.errors import DatasetNotFoundError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class FileSource:
    """A real dataset: its shape, the files that make it up and where to look for them."""

    name: str
    shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    folder_names: tuple[str, ...]  # tried under the data root, in order
    debian_folder: str  # under /usr/share/datasets
    debian_package: str | None
    required: tuple[str, ...]  # file names that must all be present (".gz" optional for IDX)
    load_folder: Callable[[Path], ImageSet]
    download: Callable[[Path], None]
    how_to: str

    def find_folder(self, root: Path | None) -> tuple[Path | None, list[Path]]:
        """Return the first folder holding every required file, and all folders searched."""
        candidates: list[Path] = []
        if root is not None:
            candidates += [root / name for name in self.folder_names]
            candidates.append(root)
        candidates.append(SYSTEM_DATASETS_DIR / self.debian_folder)
        for folder in candidates:
            if all(_resolve(folder, f) is not None for f in self.required):
                return folder, candidates
        return None, candidates


def _resolve(folder: Path, name: str) -> Path | None:
    """The path of ``name`` in ``folder``, accepting a gzipped copy for IDX files."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_folder(folder: Path, origin_name: str, class_names: tuple[str, ...]) -> ImageSet:
    def images(stem: str) -> torch.Tensor:
        return read_idx(_resolve(folder, stem)).unsqueeze(1).contiguous()

    def labels(stem: str) -> torch.Tensor:
        return read_idx(_resolve(folder, stem)).long()

    return ImageSet(
        train_images=images("train-images-idx3-ubyte"),
        train_labels=labels("train-labels-idx1-ubyte"),
        test_images=images("t10k-images-idx3-ubyte"),
        test_labels=labels("t10k-labels-idx1-ubyte"),
        class_names=list(class_names),
        origin=f"{origin_name} from {folder}",
    )


def _load_cifar_folder(folder: Path) -> ImageSet:
    train_x, train_y = read_cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = read_cifar_batches(folder, ["test_batch"])
    return ImageSet(train_x, train_y, test_x, test_y, list(CIFAR10_CLASSES), origin=f"CIFAR-10 from {folder}")


@contextmanager
def _socket_timeout(seconds: float):
    """Bound every network wait of a download so that no network never means a hang."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _torchvision_download(cls_name: str) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(30):
            getattr(tvd, cls_name)(str(root), train=True, download=True)
            getattr(tvd, cls_name)(str(root), train=False, download=True)

    return download


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

FASHION_MNIST = FileSource(
    name="fashion_mnist",
    shape=(1, 28, 28),
    class_names=FASHION_CLASSES,
    folder_names=("FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "FashionMNIST"),
    debian_folder="fashion-mnist",
    debian_package="dataset-fashion-mnist",
    required=IDX_FILES,
    load_folder=lambda folder: _load_idx_folder(folder, "Fashion-MNIST", FASHION_CLASSES),
    download=_torchvision_download("FashionMNIST"),
    how_to=(
        "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in <data root>/fashion-mnist/, "
        "or install Debian's package (apt-get install dataset-fashion-mnist), "
        "or run with data.download=true on a machine with network access"
    ),
)

MNIST_FILES = FileSource(
    name="mnist",
    shape=(1, 28, 28),
    class_names=MNIST_CLASSES,
    folder_names=("MNIST/raw", "mnist", "MNIST"),
    debian_folder="mnist",
    debian_package=None,
    required=IDX_FILES,
    load_folder=lambda folder: _load_idx_folder(folder, "MNIST", MNIST_CLASSES),
    download=_torchvision_download("MNIST"),
    how_to=(
        "put the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in <data root>/mnist/ "
        "(or torchvision's layout <data root>/MNIST/raw/), "
        "or run with data.download=true on a machine with network access"
    ),
)

CIFAR10_FILES = FileSource(
    name="cifar10",
    shape=(3, 32, 32),
    class_names=CIFAR10_CLASSES,
    folder_names=("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "cifar-10"),
    debian_folder="cifar10",
    debian_package=None,
    required=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
    load_folder=_load_cifar_folder,
    download=_torchvision_download("CIFAR10"),
    how_to=(
        "unpack cifar-10-python.tar.gz (the python version) so that "
        "<data root>/cifar-10-batches-py/ holds data_batch_1..5 and test_batch, "
        "or run with data.download=true on a machine with network access"
    ),
)


def load_file_source(source: FileSource, root: str | Path | None, download: bool) -> ImageSet:
    """Find (or download) the files of ``source`` and read them into memory.

    Raises:
        DatasetNotFoundError: nothing found and no download possible; the
            message lists every folder searched and how to get the files.
    """
    name = source.name
    root_path = Path(root).expanduser() if root else None
    folder, searched = source.find_folder(root_path)
    download_error = None
    if folder is None and download and root_path is not None:
        log.info("%s not found locally; trying a download into %s", name, root_path)
        try:
            source.download(root_path)
        except Exception as exc:  # noqa: BLE001 — a failed download (many error types) is reported with the search
            lines = [line.strip(" <>") for line in str(exc).splitlines() if line.strip(" <>()")]
            download_error = f"{type(exc).__name__}: {lines[-1] if lines else 'no detail'}"
        folder, searched = source.find_folder(root_path)
    if folder is None:
        lines = [f"dataset {name!r} was not found. Looked in:"]
        lines += [f"  - {p.resolve()}" for p in dict.fromkeys(searched)]
        if not download:
            lines.append("Download: off (data.download=false).")
        elif root_path is None:
            lines.append("Download: skipped, no data root (data.root) is set.")
        else:
            lines.append(f"Download into {root_path}: failed ({download_error}).")
        lines.append(f"To fix: {source.how_to}.")
        raise DatasetNotFoundError("\n".join(lines))
    log.info("loading %s from %s", name, folder)
    return source.load_folder(folder)


class FileDataset(ImageDataModule):
    """A dataset read from files that are searched for (and downloaded when allowed); see the module docstring.

    Args:
        root: the data root searched first for the files (and downloaded into).
        download: try a torchvision download when the files are found nowhere.
        **kwargs: the options of :class:`~aelab.data.datamodule.ImageDataModule`.
    """

    source: FileSource

    def __init__(self, root: str | None = "data", download: bool = True, **kwargs):
        check_arguments(FileDataset, locals(), "data")
        super().__init__(**kwargs)
        self.root = str(Path(root).expanduser()) if root else None
        self.download = bool(download)

    def cache_key(self) -> tuple:
        return (self.root, self.download)

    def load(self) -> ImageSet:
        return load_file_source(self.source, self.root, self.download)


class FashionMNIST(FileDataset):
    """Fashion-MNIST: 60k train / 10k test grayscale 28x28 images of 10 clothing classes."""

    name = "fashion_mnist"
    source = FASHION_MNIST
    shape = FASHION_MNIST.shape
    class_names = FASHION_CLASSES


class MNIST(FileDataset):
    """MNIST: 60k train / 10k test grayscale 28x28 handwritten digits."""

    name = "mnist"
    source = MNIST_FILES
    shape = MNIST_FILES.shape
    class_names = MNIST_CLASSES


class CIFAR10(FileDataset):
    """CIFAR-10: 50k train / 10k test colour 32x32 images of 10 object classes."""

    name = "cifar10"
    source = CIFAR10_FILES
    shape = CIFAR10_FILES.shape
    class_names = CIFAR10_CLASSES
