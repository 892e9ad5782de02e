#!/usr/bin/env python
"""Training-throughput benchmark: aelab's LightningModule under the Trainer vs a bare PyTorch loop.

Same net (the default ``model=conv`` autoencoder), same batch size, same
optimizer (Adam 1e-3), same Fashion-MNIST images already in memory, on the
CPU. The aelab side runs the model and DataModule that ``aelab-train`` builds,
under a Lightning Trainer with its CSV logger and per-step logging (progress
bar, validation and checkpoints off: they are not training). Measured in one
process, alternating, median of rounds; images per second exclude the first
few (warm-up) steps.

    .venv/bin/python scripts/bench_train.py [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F

from aelab.data import ImageDataModule, to_float_batch
from aelab.models import Autoencoder
from aelab.nets import ConvDecoder, ConvEncoder

WARMUP = 5


def make_model(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder((1, 28, 28), bottleneck=32, encoder=ConvEncoder, decoder=ConvDecoder)


class StepTimer(L.Callback):
    """Times training steps after the warm-up ones."""

    def __init__(self):
        self.start = None
        self.images = 0
        self.elapsed = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == WARMUP:
            self.start = time.perf_counter()
        if batch_idx >= WARMUP:
            self.images += batch["image"].shape[0]

    def on_train_epoch_end(self, trainer, pl_module):
        self.elapsed = time.perf_counter() - self.start


def aelab_images_per_second(dm: ImageDataModule, steps: int, batch_size: int) -> float:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=steps + WARMUP, limit_val_batches=0,
            num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            logger=L.pytorch.loggers.CSVLogger(tmp), log_every_n_steps=50, callbacks=[timer],
        )
        trainer.fit(make_model(), datamodule=dm)
    return timer.images / timer.elapsed


def bare_images_per_second(images: torch.Tensor, steps: int, batch_size: int) -> float:
    model = make_model()
    encoder, decoder = model.encoder, model.decoder
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(images.shape[0], generator=generator)
    start = None
    for step in range(steps + WARMUP):
        if step == WARMUP:
            start = time.perf_counter()
        x = images[order[step * batch_size : (step + 1) * batch_size]]
        out = torch.sigmoid(decoder(encoder(x)))
        loss = F.mse_loss(out, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    dm = ImageDataModule("fashion_mnist", root="data", download=False, batch_size=args.batch_size)
    dm.setup()
    in_memory = to_float_batch({"image": dm.splits["train"].images})["image"]  # the bare loop's data, pre-converted
    ours, bare = [], []
    for _ in range(args.rounds):
        bare.append(bare_images_per_second(in_memory, args.steps, args.batch_size))
        ours.append(aelab_images_per_second(dm, args.steps, args.batch_size))
    a, b = statistics.median(ours), statistics.median(bare)
    print(f"conv autoencoder (bottleneck 32) on Fashion-MNIST, batch {args.batch_size}, {args.steps} timed steps "
          f"x {args.rounds} rounds (median), CPU, {torch.get_num_threads()} threads")
    print(f"  bare PyTorch loop      : {b:9.1f} images/s")
    print(f"  aelab model + Trainer  : {a:9.1f} images/s")
    print(f"  ratio aelab / bare     : {a / b:9.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
