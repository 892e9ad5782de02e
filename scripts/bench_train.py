#!/usr/bin/env python
"""Training-throughput benchmark: aelab's LightningModule under the Trainer vs a bare PyTorch loop.

For each setting — net (the default ``model=conv`` and ``model=mlp``
autoencoders), batch size (256, 1024), precision (fp32, bf16-mixed) and device
(CPU; CUDA when present) — both sides train the same net with the same batch,
optimizer (Adam 1e-3) and Fashion-MNIST images already in memory:

* **bare**: a plain PyTorch loop over a float tensor (autocast for bf16);
* **aelab**: the model and DataModule that ``aelab-train`` builds, under a
  Lightning Trainer with the CSV logger and per-step logging (validation,
  checkpoints and the progress bar off: they are not training), once per
  ``--steps-per-call`` value (default: 1 and ``conf/config.yaml``'s). On a GPU the
  DataModule keeps the dataset on the device (``data.device=auto``).

Each side runs in its own process (so its peak memory is its own: CPU max
RSS, GPU max allocated), alternating bare/aelab for ``--rounds`` rounds; the
median images/s after the warm-up steps and the ratio aelab/bare are printed.
Last, DDP scaling on the CPU: ``trainer=ddp_cpu`` (2 gloo processes, per-process
batch B) against 1 process with batch 2B, same global batch.

    .venv/bin/python scripts/bench_train.py [--rounds 2] [--images 12000] [--quick]
    .venv/bin/python scripts/bench_train.py --devices cuda --no-ddp      # the GPU rows (scripts/gpu_check.sh)

``--devices``, ``--nets``, ``--batches``, ``--precisions`` and ``--steps-per-call`` pick the rows;
``--dry-run`` lists them without measuring.
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


def run_aelab(
    net: str, batch: int, precision: str, device: str, steps: int, processes: int = 1, steps_per_call: int = 1
) -> dict:
    import lightning as L
    import torch

    from aelab.store.checkpoints import AtomicCheckpointIO
    from aelab.tracking import ResumableCSVLogger

    class StepTimer(L.Callback):
        """Times the training steps after the warm-up ones (rank 0; images of all ranks): before every batch,
        inside a call of several too (aelab's step calls this hook)."""

        start, images, elapsed = None, 0, 0.0

        def on_chunk_batch_start(self, trainer, pl_module, batch_, batch_idx):
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
    model = make_model(net)
    dm.steps_per_call = model.steps_per_call = steps_per_call
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
        trainer.fit(model, datamodule=dm)
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
        result = run_aelab(
            args.net, args.batch, args.precision, args.device, args.steps, args.processes, args.steps_per_call_one
        )
    print("RESULT " + json.dumps(result), flush=True)


def measure(
    side: str,
    net: str,
    batch: int,
    precision: str,
    device: str,
    steps: int,
    processes: int = 1,
    steps_per_call: int = 1,
) -> dict:
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
        "--steps-per-call-one",
        str(steps_per_call),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")


def gpu_table(tests_log: str, bench_log: str, device: str, seconds: float) -> str:
    """The one table of ``scripts/gpu_check.sh``: the GPU tests' outcome and the benchmark's GPU rows."""
    tests = open(tests_log).read().splitlines()
    summary = next((s.strip("= ") for s in reversed(tests) if any(w in s for w in ("passed", "failed", "error"))), "")
    bench = open(bench_log).read().splitlines()
    got = [json.loads(s[4:]) for s in bench if s.startswith("ROW ")]
    sizes = sorted({int(n) for r in got for n in r["aelab"]})
    lines = [
        f"aelab GPU check on {device} ({seconds:.0f} s); images/s, aelab N = steps_per_call, (ratio to bare)",
        "| check | bare | " + " | ".join(f"aelab N={n}" for n in sizes) + " |",
        "|---|---|" + "---|" * len(sizes),
        f"| GPU tests | {summary or 'no result (see the log)'} |" + " |" * len(sizes),
    ]
    for r in got:
        cells = [f"{r['aelab'][str(n)]:.0f} ({r['aelab'][str(n)] / r['bare']:.3f})" for n in sizes]
        lines.append(
            f"| {r['net']}, batch {r['batch']}, {r['precision']} | {r['bare']:.0f} | " + " | ".join(cells) + " |"
        )
    if not got:
        lines.append("| benchmark | no rows: " + " ".join(bench[-3:]) + " |" + " |" * len(sizes))
    return "\n".join(lines)


def default_steps_per_call() -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_steps import default_steps_per_call as default

    return default()


def rows(args: argparse.Namespace, cuda: bool) -> list[tuple[str, str, int, str]]:
    """The (device, net, batch, precision) settings to measure."""
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if cuda else [])
    nets = args.nets.split(",") if args.nets else ["conv"] if args.quick else ["conv", "mlp"]
    precisions = args.precisions.split(",") if args.precisions else ["32-true"] if args.quick else PRECISIONS
    batches = [int(b) for b in args.batches.split(",")]
    return [(d, n, b, p) for d in devices for n in nets for b in batches for p in precisions]


PRECISIONS = ["32-true", "bf16-mixed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=12000, help="timed images per measurement")
    parser.add_argument(
        "--quick", action="store_true", help="conv at batch 256 and 1024 in fp32 only, and the DDP check"
    )
    parser.add_argument("--no-ddp", action="store_true")
    parser.add_argument("--devices", default="", help="cpu,cuda (default: cpu, and cuda when there is one)")
    parser.add_argument("--nets", default="", help="conv,mlp")
    parser.add_argument("--batches", default="256,1024")
    parser.add_argument("--precisions", default="", help="32-true,bf16-mixed")
    parser.add_argument("--steps-per-call", default="", help="aelab's steps_per_call values (default: 1 and default)")
    parser.add_argument("--dry-run", action="store_true", help="list the rows, measure nothing")
    parser.add_argument("--gpu-table", nargs=4, help=argparse.SUPPRESS)  # tests log, bench log, device, seconds
    parser.add_argument("--one", choices=["bare", "aelab"], help=argparse.SUPPRESS)
    parser.add_argument("--net", default="conv", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="32-true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=40, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-call-one", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(argparse.Namespace(**{**vars(args), "side": args.one}))
    if args.gpu_table:
        tests_log, bench_log, device, seconds = args.gpu_table
        print(gpu_table(tests_log, bench_log, device, float(seconds)))
        return
    default = default_steps_per_call()
    sizes = sorted({int(n) for n in args.steps_per_call.split(",") if n} or {1, default})
    if args.dry_run:
        for device, net, batch, precision in rows(args, cuda="cuda" in args.devices):
            print(f"row: {device} {net} batch {batch} {precision} steps_per_call {','.join(map(str, sizes))}")
        return

    import torch

    gpu = f" + {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    print(
        f"Training throughput, aelab vs bare PyTorch: Fashion-MNIST in memory, Adam 1e-3, bottleneck 32; "
        f"{args.images} timed images x {args.rounds} rounds (median); {os.cpu_count()} CPU cores{gpu}; "
        f"aelab N = steps_per_call (default {default})"
    )
    print(
        f"{'device':6} {'net':4} {'batch':>5} {'precision':10} {'bare img/s':>11} "
        + " ".join(f"{'N=' + str(n) + ' img/s':>11} {'ratio':>6}" for n in sizes)
        + f" {'bare peak MB':>12} {'aelab peak MB':>13}"
    )
    for device, net, batch, precision in rows(args, torch.cuda.is_available()):
        steps = max(8, args.images // batch)
        bare, ours = [], {n: [] for n in sizes}
        for _ in range(args.rounds):
            bare.append(measure("bare", net, batch, precision, device, steps))
            for n in sizes:
                ours[n].append(measure("aelab", net, batch, precision, device, steps, steps_per_call=n))
        b = statistics.median(r["images_per_s"] for r in bare)
        a = {n: statistics.median(r["images_per_s"] for r in got) for n, got in ours.items()}
        mem = "max allocated" if device == "cuda" else "max RSS"
        print(
            f"{device:6} {net:4} {batch:5d} {precision:10} {b:11.0f} "
            + " ".join(f"{a[n]:11.0f} {a[n] / b:6.3f}" for n in sizes)
            + f" {max(r['peak_mb'] for r in bare):12.0f} "
            f"{max(r['peak_mb'] for got in ours.values() for r in got):13.0f}  ({mem})",
            flush=True,
        )
        row = {"device": device, "net": net, "batch": batch, "precision": precision, "bare": b, "aelab": a}
        print("ROW " + json.dumps(row), flush=True)
    print("targets: ratio >= 0.9 on CPU and >= 0.8 on GPU for conv at batch 1024")
    if args.no_ddp:
        return
    batch = 256
    steps = max(8, args.images // (2 * batch))
    single, double = [], []
    for _ in range(args.rounds):
        single.append(measure("aelab", "conv", 2 * batch, "32-true", "cpu", steps, 1, default))
        double.append(measure("aelab", "conv", batch, "32-true", "cpu", steps, 2, default))
    s = statistics.median(r["images_per_s"] for r in single)
    d = statistics.median(r["images_per_s"] for r in double)
    print(
        f"DDP scaling on CPU, conv, global batch {2 * batch}: 1 process {s:.0f} images/s (all {os.cpu_count()} cores), "
        f"ddp_cpu 2 processes x batch {batch} {d:.0f} images/s ({max(1, (os.cpu_count() or 1) // 2)} threads each): "
        f"speed-up {d / s:.2f}x"
    )


if __name__ == "__main__":
    main()
