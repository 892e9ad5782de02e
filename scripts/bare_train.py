#!/usr/bin/env python
"""The bare PyTorch script that ``scripts/bench_e2e.py`` races ``aelab-train`` against.

It does the work a default ``aelab-train`` run does, without aelab around it: the same
net (built from ``aelab.nets``), the same Fashion-MNIST training/validation split
(55,000 / 5,000 from the seed), batches of 256 reshuffled every epoch, Adam 1e-3, and after
every epoch the same forward passes as aelab's evaluation and a checkpoint (model + optimizer):

* validation, batches of 1,000 (aelab's ``data.eval_batch_size``): the per-image values aelab
  logs — the autoencoders' reconstruction MSE; the VAE's one-sample ELBO and the MSE of the
  reconstruction of its mean code (a second decoder pass);
* the overfitting gap's training side: the same values on 5,000 fixed training images
  (as many as validation), in eval mode, batches of 256 (as aelab's ``OverfittingGap``).

``--no-gap`` leaves out the gap's pass and the VAE's mean-code reconstruction: the script as it was
before 2026-12-01, whose work is a default aelab run's minus those features' forward passes. No
test pass (the benchmark runs aelab with ``test=false``).

    python scripts/bare_train.py --net conv --epochs 2 --out /tmp/bare
    python scripts/bare_train.py --net vae --epochs 5 --out /tmp/bare      # fixed binarization, Bernoulli ELBO
    python scripts/bare_train.py --net mlp --epochs 3 --out /tmp/bare --no-gap

It prints one line ``TIMES <first batch at> <fit end at> <validation loss> <CPU time of the training phase>``
(``time.time()``; ``time.process_time()``) for the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aelab.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def nets(net: str):
    shape = (1, 28, 28)
    if net == "conv":
        return ConvEncoder(shape, 32), ConvDecoder(shape, 32)
    if net == "mlp":
        return MLPEncoder(shape, 32, hidden=[512, 256]), MLPDecoder(shape, 32, hidden=[512, 256])
    return (
        MLPEncoder(shape, 100, hidden=[200, 200], activation="tanh"),  # VAE: mean and log variance of 50 latents
        MLPDecoder(shape, 50, hidden=[200, 200], activation="tanh"),
    )


def per_image_terms(
    net: str, enc, dec, x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-image objective (MSE; the VAE's negative one-sample ELBO) and the VAE's mean code (else None)."""
    if net != "vae":
        return (torch.sigmoid(dec(enc(x))) - x).pow(2).flatten(1).mean(1), None
    mu, logvar = enc(x).chunk(2, dim=1)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator)
    recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").flatten(1).sum(1)
    return recon + 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1), mu


def loss_of(net: str, enc, dec, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return per_image_terms(net, enc, dec, x, generator)[0].mean()


def evaluate(
    net: str, enc, dec, images: torch.Tensor, batch: int, full: bool, span=contextlib.nullcontext
) -> tuple[float, float]:
    """The mean per-image objective over ``images`` in batches of ``batch`` (eval mode, no gradients) and, with
    ``full``, the VAE's other per-image value aelab's evaluation computes: the MSE of its mean code's
    reconstruction (nan otherwise; the autoencoders' objective is their MSE)."""
    g = torch.Generator().manual_seed(12345)
    loss, mse = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i : i + batch].float().div_(255)
            with span("evaluation"):
                per_image, mu = per_image_terms(net, enc, dec, x, g)
                if full and mu is not None:
                    mse += float((torch.sigmoid(dec(mu)) - x).pow(2).flatten(1).mean(1).sum())
            loss += float(per_image.sum())
    return loss / len(images), (mse / len(images) if full and net == "vae" else math.nan)


def train(
    net: str, epochs: int, batch: int, out: Path, no_gap: bool = False, span=contextlib.nullcontext
) -> tuple[float, float, float, float]:
    """Train and evaluate as described above; returns ``(first batch at, fit end at, validation loss, CPU time of
    the training phase)``. ``span(name)`` is entered around the compute a default aelab run shares
    (``objective``, ``backward``, ``step``, ``evaluation``: ``scripts/bench_overhead.py`` times them)."""
    torch.manual_seed(0)
    images = torch.from_numpy(read_idx(FMNIST / "train-images-idx3-ubyte.gz").copy())[:, None]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    val, train_images = images[order[:5000]], images[order[5000:]]
    if net == "vae":  # fixed binarization, once
        g = torch.Generator().manual_seed(1)
        train_images = (torch.rand(train_images.shape, generator=g) < train_images.float() / 255).to(torch.uint8) * 255
        val = (torch.rand(val.shape, generator=g) < val.float() / 255).to(torch.uint8) * 255
    enc, dec = nets(net)
    optimizer = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    out.mkdir(parents=True, exist_ok=True)
    first_batch = first_cpu = None
    for epoch in range(epochs):
        enc.train(), dec.train()
        perm = torch.randperm(len(train_images))
        for start in range(0, len(train_images), batch):
            x = train_images[perm[start : start + batch]].float().div_(255)
            if first_batch is None:
                first_batch, first_cpu = time.time(), time.process_time()
            with span("objective"):
                loss = loss_of(net, enc, dec, x)
            optimizer.zero_grad(set_to_none=True)
            with span("backward"):
                loss.backward()
            with span("step"):
                optimizer.step()
        enc.eval(), dec.eval()
        val_loss, _ = evaluate(net, enc, dec, val, 1000, full=not no_gap, span=span)
        assert math.isfinite(val_loss)
        if not no_gap:  # the overfitting gap's training side: as many training images as validation saw
            assert math.isfinite(evaluate(net, enc, dec, train_images[: len(val)], batch, full=True, span=span)[0])
        torch.save(
            {
                "encoder": enc.state_dict(),
                "decoder": dec.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
            },
            out / "last.ckpt",
        )
    return first_batch, time.time(), val_loss, time.process_time() - first_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=("conv", "mlp", "vae"), default="conv")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-gap", action="store_true", help="no overfitting-gap pass, no VAE mean-code MSE")
    args = parser.parse_args()
    first_batch, end, val_loss, cpu = train(args.net, args.epochs, args.batch, Path(args.out), args.no_gap)
    print(f"TIMES {first_batch} {end} {val_loss} {cpu}")


if __name__ == "__main__":
    main()
