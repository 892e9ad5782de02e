#!/usr/bin/env python
"""Own-data benchmark: Fashion-MNIST written out as 60,000 PNG files, read back by ``data=folder``.

Prints, each figure measured in this run:

1. **first run**: decoding the 60,000 PNGs into the cache (both cores), images/s, and the cache size;
2. **second run**: a fresh process (torch and Lightning already imported) from the start of
   ``ImageFolder(...).setup()`` to the first training batch (the files are listed and hashed, the cache
   is found by its key, nothing is decoded), next to the same for the built-in ``FashionMNIST`` (IDX files);
3. **training throughput**: the default conv autoencoder under a Lightning Trainer (aelab's model and
   DataModule, no validation) on the folder's data and on the built-in ``fashion_mnist``, each side in its
   own process, alternating for ``--rounds`` rounds, median images/s, ratio (target: within 5 %);
4. **memory**: set-up and one epoch of batches from the cache held in RAM against the same cache
   memory-mapped (``data.memory_budget_mb`` below its size): growth of the process's private memory
   (``RssAnon``, what the data cost in RAM) and of its file-backed resident pages (``RssFile``, page
   cache the kernel can drop), sampled every batch.

    .venv/bin/python scripts/bench_folder.py [--images 60000] [--rounds 3] [--steps 150]

The PNG folder is written once under ``outputs/bench/fmnist_png`` and kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def write_pngs(folder: Path, n: int) -> Path:
    """The first ``n`` Fashion-MNIST training images as PNG files in class subfolders (written once)."""
    marker = folder / f".complete-{n}"
    if marker.exists():
        return folder
    from PIL import Image

    from aelab.data.readers import read_idx

    root = Path("/usr/share/datasets/fashion-mnist")
    images = read_idx(root / "train-images-idx3-ubyte.gz").numpy()[:n]
    labels = read_idx(root / "train-labels-idx1-ubyte.gz").numpy()[:n]
    shutil.rmtree(folder, ignore_errors=True)
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / CLASSES[label] / f"{i:05d}.png")
    marker.write_text("ok")
    return folder


def child(mode: str, args: dict) -> dict:
    """Run one measurement in a fresh Python process; returns its JSON line."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, json.dumps(args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def proc_memory() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def datamodule(kind: str, a: dict):
    from aelab.data import FashionMNIST, ImageFolder

    if kind == "folder":
        return ImageFolder(
            path=a["folder"],
            cache_dir=a["cache"],
            batch_size=a.get("batch", 256),
            val_size=5000,
            val_fraction=None,
            test_fraction=0.1,
            memory_budget_mb=a.get("budget", 4096),
        )
    return FashionMNIST(root="data", download=False, batch_size=a.get("batch", 256))


def run_child(mode: str, a: dict) -> dict:
    if mode == "decode":
        from aelab.data import ImageFolder

        started = time.perf_counter()
        dm = ImageFolder(path=a["folder"], cache_dir=a["cache"])
        dm.prepare_data()
        seconds = time.perf_counter() - started
        cache = Path(dm.info()["cache_file"])
        return {"seconds": seconds, "images": a["images"], "cache_mb": cache.stat().st_size / 2**20}
    if mode == "first_batch":
        import aelab.data  # noqa: F401 — torch and Lightning imported before the clock starts: the data's own time

        started = time.perf_counter()
        dm = datamodule(a["kind"], a)
        dm.prepare_data()
        dm.setup("fit")
        next(iter(dm.train_dataloader()))
        return {"seconds": time.perf_counter() - started}
    if mode == "train":
        import lightning as L
        import torch

        from aelab.models import Autoencoder
        from aelab.nets import ConvDecoder, ConvEncoder

        torch.manual_seed(0)
        dm = datamodule(a["kind"], a)
        model = Autoencoder(dm.dims, bottleneck=32, encoder=ConvEncoder, decoder=ConvDecoder)
        times = []

        class Clock(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                times.append(time.perf_counter())

        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=a["steps"],
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Clock()],
        )
        trainer.fit(model, datamodule=dm)
        warm = 10
        return {"images_per_s": (len(times) - warm - 1) * a["batch"] / (times[-1] - times[warm])}
    if mode == "memory":
        import aelab.data  # noqa: F401 — the baseline includes the libraries (torch, Lightning), not the data

        base = proc_memory()
        dm = datamodule("folder", a)
        dm.setup("fit")
        peak = proc_memory()
        for _ in dm.train_dataloader():
            now = proc_memory()
            peak = {k: max(peak[k], now[k]) for k in peak}
        return {
            "anon_mb": peak["RssAnon"] - base["RssAnon"],
            "file_mb": peak["RssFile"] - base["RssFile"],
            "mapped": dm.info()["memory_mapped"],
            "cache_mb": Path(dm.info()["cache_file"]).stat().st_size / 2**20,
        }
    raise ValueError(mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], json.loads(args.child[1]))))
        return
    folder = write_pngs(Path("outputs/bench/fmnist_png"), args.images)
    cache = Path(tempfile.mkdtemp(prefix="aelab-bench-cache-"))
    common = {
        "folder": str(folder),
        "cache": str(cache),
        "images": args.images,
        "batch": args.batch,
        "steps": args.steps,
    }
    try:
        decode = child("decode", common)
        print(
            f"1. first run: {args.images} PNGs decoded in {decode['seconds']:.1f} s = "
            f"{args.images / decode['seconds']:,.0f} "
            f"images/s ({os.cpu_count()} cores); cache {decode['cache_mb']:.1f} MB"
        )
        firsts = {"folder": [], "builtin": []}
        for r in range(args.rounds):
            for kind in list(firsts) if r % 2 == 0 else list(firsts)[::-1]:
                firsts[kind].append(child("first_batch", {**common, "kind": kind})["seconds"])
        f, b = statistics.median(firsts["folder"]), statistics.median(firsts["builtin"])
        print(
            f"2. second run, setup to the first training batch (median of {args.rounds}): folder {f:.2f} s, "
            f"built-in fashion_mnist {b:.2f} s"
        )
        speeds = {"folder": [], "builtin": []}
        for r in range(args.rounds):
            for kind in list(speeds) if r % 2 == 0 else list(speeds)[::-1]:  # alternate which side goes first
                speeds[kind].append(child("train", {**common, "kind": kind})["images_per_s"])
        f, b = statistics.median(speeds["folder"]), statistics.median(speeds["builtin"])
        print(
            f"3. training throughput, conv AE, batch {args.batch}, {args.steps} steps (median of {args.rounds}): "
            f"folder {f:,.0f} "
            f"vs built-in {b:,.0f} images/s = {f / b:.3f} (target 0.95-1.05)"
        )
        ram = child("memory", {**common, "budget": 4096})
        mapped = child("memory", {**common, "budget": 1})
        print(
            f"4. set-up plus one epoch of batches, cache {ram['cache_mb']:.1f} MB, growth over the process after "
            f"importing aelab.data: "
            f"in RAM +{ram['anon_mb']:.0f} MB private (RssAnon), +{ram['file_mb']:.0f} MB file pages; memory-mapped "
            f"(data.memory_budget_mb=1 < cache) +{mapped['anon_mb']:.0f} MB private, +{mapped['file_mb']:.0f} MB file"
            f" pages "
            "(page cache, which the kernel drops under pressure)"
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
