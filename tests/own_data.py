"""Own-data fixtures written into temporary folders: image folders, array files, an MVTec-like anomaly set."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fashion_mnist_arrays(n: int, split: str = "train", seed: int = 0):
    """``n`` Fashion-MNIST images (uint8 ``[n, 28, 28]``) and labels from Debian's dataset-fashion-mnist."""
    from aelab.data.readers import read_idx

    root = Path("/usr/share/datasets/fashion-mnist")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz").numpy()
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").numpy()
    pick = np.random.default_rng(seed).choice(len(images), n, replace=False)
    return images[pick], labels[pick]


def write_image_folder(
    root: Path, images: np.ndarray, labels: np.ndarray | None, class_names=None, fmt=("png", "jpg")
) -> Path:
    """Images as files, one subfolder per class when ``labels`` is given; formats alternate over ``fmt``."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        folder = root if labels is None else root / (class_names[labels[i]] if class_names else f"class_{labels[i]}")
        folder.mkdir(exist_ok=True)
        pixels = (
            image[0]
            if image.ndim == 3 and image.shape[0] == 1
            else image.transpose(1, 2, 0)
            if image.ndim == 3
            else image
        )
        Image.fromarray(pixels).save(folder / f"img_{i:05d}.{fmt[i % len(fmt)]}", quality=95)
    return root


def _texture(rng, size: int) -> np.ndarray:
    """A good image: soft stripes at a random phase and angle."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period, phase = rng.uniform(0, 0.4), rng.uniform(6, 9), rng.uniform(0, 2 * np.pi)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)
    return (110 + 60 * wave + rng.normal(0, 4, (size, size))).clip(0, 255)


def _defect(rng, image: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    mask = np.zeros_like(image, dtype=bool)
    if kind == "scratch":
        r0, c0 = rng.integers(4, size - 12, 2)
        length = rng.integers(8, 14)
        for t in range(length):
            mask[r0 + t // 2 : r0 + t // 2 + 2, c0 + t] = True
        image = np.where(mask, 250.0, image)
    else:  # spot
        cy, cx = rng.integers(6, size - 6, 2)
        yy, xx = np.mgrid[0:size, 0:size]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 5) ** 2
        image = np.where(mask, 5.0, image)
    return image, mask


def write_mvtec_like(
    root: Path,
    n_train: int = 240,
    n_good: int = 30,
    n_defect: int = 30,
    size: int = 32,
    seed: int = 0,
    masks: bool = True,
) -> Path:
    """An MVTec AD-layout set of stripe textures with two defect types (scratch, spot) and their masks."""
    from PIL import Image

    rng = np.random.default_rng(seed)

    def save(image, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(path)

    for i in range(n_train):
        save(_texture(rng, size), root / "train" / "good" / f"{i:03d}.png")
    for i in range(n_good):
        save(_texture(rng, size), root / "test" / "good" / f"{i:03d}.png")
    for kind in ("scratch", "spot"):
        for i in range(n_defect):
            image, mask = _defect(rng, _texture(rng, size), kind)
            save(image, root / "test" / kind / f"{i:03d}.png")
            if masks:
                save(mask * 255, root / "ground_truth" / kind / f"{i:03d}_mask.png")
    return root
