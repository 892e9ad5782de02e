#!/usr/bin/env python
"""Data-path benchmark: aelab's tensor-backed batches vs torchvision's FashionMNIST + DataLoader.

Both serve float batches of 256 Fashion-MNIST training images in [0, 1],
shuffled, measured in the same process, alternating, median of 3 rounds:

* aelab: ``ImageDataModule.train_dataloader()`` (uint8 slices) + ``to_float_batch``;
* torchvision: ``FashionMNIST(transform=ToTensor())`` + ``DataLoader(batch_size=256,
  shuffle=True)`` — the standard recipe (per-item PIL conversion, default collate).

    .venv/bin/python scripts/bench_data.py [--batches 200] [--workers 0]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def torchvision_root(tmp: Path) -> Path:
    """Lay out the Fashion-MNIST IDX files where torchvision looks (uncompressed, no MD5 check)."""
    from aelab.data import FashionMNIST

    folder, _ = FashionMNIST.source.find_folder(Path("data"))
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: run `make data` (or apt-get install dataset-fashion-mnist)")
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        src = folder / f"{stem}.gz"
        if src.is_file():
            with gzip.open(src, "rb") as fin, open(raw / stem, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copy(folder / stem, raw / stem)
    return tmp


def batches_per_second(loader, convert, n: int) -> float:
    it = iter(loader)
    next(it)  # warm-up (first batch, iterator start)
    done, start = 0, time.perf_counter()
    while done < n:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        x = convert(batch)
        assert x.dtype == torch.float32
        done += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for torchvision (0 = the default)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST
    from torchvision.transforms import ToTensor

    from aelab.data import FashionMNIST, to_float_batch

    dm = FashionMNIST(root="data", download=False, batch_size=args.batch_size)
    dm.setup()
    with tempfile.TemporaryDirectory() as tmp:
        tv_set = TorchvisionFashionMNIST(str(torchvision_root(Path(tmp))), train=True, transform=ToTensor())
        tv_loader = torch.utils.data.DataLoader(
            tv_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers
        )
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(batches_per_second(dm.train_dataloader(), lambda b: to_float_batch(b)["image"], args.batches))
            theirs.append(batches_per_second(tv_loader, lambda b: b[0], args.batches))
    a, t = statistics.median(ours), statistics.median(theirs)
    print(
        f"Fashion-MNIST train batches of {args.batch_size}, {args.batches} batches x {args.rounds} rounds (median), "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  aelab ImageDataModule          : {a:10.1f} batches/s")
    print(f"  torchvision FashionMNIST+ToTensor (workers={args.workers}): {t:10.1f} batches/s")
    print(f"  speed-up aelab / torchvision   : {a / t:10.1f}x  (target >= 20x)")


if __name__ == "__main__":
    main()
