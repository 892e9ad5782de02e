#!/usr/bin/env python
"""Training-throughput benchmark: aelab's LightningModule under the Trainer vs a bare PyTorch loop.

For each setting — net (the default ``model=conv`` and ``model=mlp``
autoencoders), batch size (256, 1024), precision (fp32, bf16-mixed) and device
(CPU; CUDA when present) — both sides train the same net with the same batch,
optimizer (Adam 1e-3) and Fashion-MNIST images already in memory:

* **bare**: a plain PyTorch loop over a float tensor (autocast for bf16);
* **aelab**: the model and DataModule that ``aelab-train`` builds, under a
  Lightning Trainer with the CSV logger and per-step logging (validation,
  checkpoints and the progress bar off: they are not training). On a GPU the
  DataModule keeps the dataset on the device (``data.device=auto``).

Each side runs in its own process (so its peak memory is its own: CPU max
RSS, GPU max allocated), alternating bare/aelab for ``--rounds`` rounds; the
median images/s after the warm-up steps and the ratio aelab/bare are printed.
Last, DDP scaling on the CPU: ``trainer=ddp_cpu`` (2 gloo processes, per-process
batch B) against 1 process with batch 2B, same global batch.

    .venv/bin/python scripts/bench_train.py [--rounds 2] [--images 12000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

WARMUP = 3


def make_model(net: str, seed: int = 0):
    import torch

    from aelab.models import Autoencoder
    from aelab.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

    torch.manual_seed(seed)
    if net == "conv":
        return Autoencoder((1, 28, 28), bottleneck=32, encoder=ConvEncoder, decoder=ConvDecoder)
    return Autoencoder(
        (1, 28, 28),
        bottleneck=32,
        encoder=lambda **kw: MLPEncoder(hidden=[512, 256], **kw),
        decoder=lambda **kw: MLPDecoder(hidden=[512, 256], **kw),
    )


def load_datamodule(batch: int):
    from aelab.data import FashionMNIST

    dm = FashionMNIST(root="data", download=False, batch_size=batch)
    dm.prepare_data()
    dm.setup()
    return dm


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_bare(net: str, batch: int, precision: str, device: str, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from aelab.data import to_float_batch

    dm = load_datamodule(batch)
    images = to_float_batch({"image": dm.splits["train"].images})["image"].to(device)
    model = make_model(net).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
    per_epoch = images.shape[0] // batch
    start = None
    for step in range(steps + WARMUP):
        if step == WARMUP:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        i = step % per_epoch
        x = images[order[i * batch : (i + 1) * batch]]
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = torch.sigmoid(model.decoder(model.encoder(x)))
            loss = F.mse_loss(out.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return {"images_per_s": steps * batch / (time.perf_counter() - start), "peak_mb": peak_memory_mb(device)}


def run_aelab(net: str, batch: int, precision: str, device: str, steps: int, processes: int = 1) -> dict:
    import lightning as L
    import torch

    from aelab.store.checkpoints import AtomicCheckpointIO
    from aelab.tracking import ResumableCSVLogger

    class StepTimer(L.Callback):
        """Times the training steps after the warm-up ones (rank 0; images of all ranks)."""

        start, images, elapsed = None, 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
            if batch_idx == WARMUP:
                if device == "cuda":
                    torch.cuda.synchronize()
                self.start = time.perf_counter()
            if batch_idx >= WARMUP:
                self.images += batch_["image"].shape[0] * trainer.world_size

        def on_train_epoch_end(self, trainer, pl_module):
            if device == "cuda":
                torch.cuda.synchronize()
            self.elapsed = time.perf_counter() - self.start

    dm = load_datamodule(batch)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=processes,
            strategy="ddp" if processes > 1 else "auto",
            precision=precision,
            use_distributed_sampler=False,
            max_epochs=1,
            limit_train_batches=steps + WARMUP,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=ResumableCSVLogger(tmp),
            log_every_n_steps=50,
            callbacks=[timer],
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(make_model(net), datamodule=dm)
        if not trainer.is_global_zero:
            sys.exit(0)
    return {"images_per_s": timer.images / timer.elapsed, "peak_mb": peak_memory_mb(device)}


def one(args: argparse.Namespace) -> None:
    """Child mode: run one side of one setting and print its result as JSON."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    if args.processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.processes))
    if args.side == "bare":
        result = run_bare(args.net, args.batch, args.precision, args.device, args.steps)
    else:
        result = run_aelab(args.net, args.batch, args.precision, args.device, args.steps, args.processes)
    print("RESULT " + json.dumps(result), flush=True)


def measure(side: str, net: str, batch: int, precision: str, device: str, steps: int, processes: int = 1) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        side,
        "--net",
        net,
        "--batch",
        str(batch),
        "--precision",
        precision,
        "--device",
        device,
        "--steps",
        str(steps),
        "--processes",
        str(processes),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=12000, help="timed images per measurement")
    parser.add_argument(
        "--quick", action="store_true", help="conv at batch 256 and 1024 in fp32 only, and the DDP check"
    )
    parser.add_argument("--no-ddp", action="store_true")
    parser.add_argument("--one", choices=["bare", "aelab"], help=argparse.SUPPRESS)
    parser.add_argument("--net", default="conv")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    if args.one:
        return one(argparse.Namespace(**{**vars(args), "side": args.one}))

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    nets = ["conv"] if args.quick else ["conv", "mlp"]
    precisions = ["32-true"] if args.quick else ["32-true", "bf16-mixed"]
    gpu = f" + {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    print(
        f"Training throughput, aelab vs bare PyTorch: Fashion-MNIST in memory, Adam 1e-3, bottleneck 32; "
        f"{args.images} timed images x {args.rounds} rounds (median); {os.cpu_count()} CPU cores{gpu}"
    )
    print(
        f"{'device':6} {'net':4} {'batch':>5} {'precision':10} {'bare img/s':>11} {'aelab img/s':>11} {'ratio':>6} "
        f"{'bare peak MB':>12} {'aelab peak MB':>13}"
    )
    for device in devices:
        for net in nets:
            for batch in (256, 1024):
                for precision in precisions:
                    steps = max(8, args.images // batch)
                    bare, ours = [], []
                    for _ in range(args.rounds):
                        bare.append(measure("bare", net, batch, precision, device, steps))
                        ours.append(measure("aelab", net, batch, precision, device, steps))
                    b = statistics.median(r["images_per_s"] for r in bare)
                    a = statistics.median(r["images_per_s"] for r in ours)
                    mem = "max allocated" if device == "cuda" else "max RSS"
                    print(
                        f"{device:6} {net:4} {batch:5d} {precision:10} {b:11.0f} {a:11.0f} {a / b:6.3f} "
                        f"{max(r['peak_mb'] for r in bare):12.0f} {max(r['peak_mb'] for r in ours):13.0f}  ({mem})",
                        flush=True,
                    )
    print("targets: ratio >= 0.9 on CPU and >= 0.8 on GPU for conv at batch 1024")
    if args.no_ddp:
        return
    batch = 256
    steps = max(8, args.images // (2 * batch))
    single, double = [], []
    for _ in range(args.rounds):
        single.append(measure("aelab", "conv", 2 * batch, "32-true", "cpu", steps, processes=1))
        double.append(measure("aelab", "conv", batch, "32-true", "cpu", steps, processes=2))
    s = statistics.median(r["images_per_s"] for r in single)
    d = statistics.median(r["images_per_s"] for r in double)
    print(
        f"DDP scaling on CPU, conv, global batch {2 * batch}: 1 process {s:.0f} images/s (all {os.cpu_count()} cores), "
        f"ddp_cpu 2 processes x batch {batch} {d:.0f} images/s ({max(1, (os.cpu_count() or 1) // 2)} threads each): "
        f"speed-up {d / s:.2f}x"
    )


if __name__ == "__main__":
    main()
