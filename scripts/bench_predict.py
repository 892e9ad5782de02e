#!/usr/bin/env python
"""Prediction benchmark: ``aelab-predict`` against a bare ``model(x)`` loop on 10,000 Fashion-MNIST test images.

Both sides compute the same things with the same conv autoencoder weights: codes, reconstructions and
per-pixel squared error maps, and each image's mean error (the anomaly score), in batches of 512 on the CPU.

* **I/O excluded**: aelab's prediction loop (``predict(..., write=False)``: the run's preprocessing of the
  uint8 inputs, ``model.infer``, the error maps and scores) over images already in memory, against a bare
  loop over the same images already converted to floats;
* **I/O included**: the whole ``aelab-predict run=... input=images.npy`` command (start-up, loading the run,
  reading the file, writing ``codes.npy``, ``recon.npy``, ``maps.npy``, ``scores.csv``, ``index.csv`` and two
  PNG grids) against a bare script that imports torch, loads the same weights, reads the same ``.npy`` and
  saves codes, reconstructions and maps with ``np.save``.

Each measurement runs in its own process, alternating aelab / bare for ``--rounds`` rounds; the medians and
the ratio (images/s aelab ÷ bare; target ≥ 0.9) are printed.

    .venv/bin/python scripts/bench_predict.py [--rounds 3] [--images 10000]
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

BIN = Path(sys.executable).parent

BARE = r"""
import sys, time, numpy as np
started = time.perf_counter()
import torch
sys.path.insert(0, {repo!r})
from aelab.nets import ConvDecoder, ConvEncoder
state = torch.load({ckpt!r}, map_location="cpu", weights_only=False)["state_dict"]
enc, dec = ConvEncoder((1, 28, 28), 32), ConvDecoder((1, 28, 28), 32)
enc.load_state_dict({{k[8:]: v for k, v in state.items() if k.startswith("encoder.")}})
dec.load_state_dict({{k[8:]: v for k, v in state.items() if k.startswith("decoder.")}})
enc.eval(); dec.eval()
x_all = torch.from_numpy(np.load({images!r})).float().div_(255)[:, None]
codes, recon, maps, scores = [], [], [], []
loop = time.perf_counter()
with torch.no_grad():
    for x in x_all.split(512):
        z = enc(x); r = torch.sigmoid(dec(z)); m = (r - x).pow(2)
        codes.append(z); recon.append(r); maps.append(m); scores.append(m.flatten(1).mean(1))
loop = time.perf_counter() - loop
if {write}:
    np.save({out!r} + "/codes.npy", torch.cat(codes).numpy()); np.save({out!r} + "/recon.npy", torch.cat(recon).numpy())
    np.save({out!r} + "/maps.npy", torch.cat(maps).numpy()); np.savetxt({out!r} + "/scores.csv",
    torch.cat(scores).numpy())
print("RESULT", loop, time.perf_counter() - started)
"""

AELAB_LOOP = r"""
import sys, time, numpy as np, torch
from aelab.data.inputs import InputSet
from aelab.deploy.predict import predict
from aelab.run.load import load_run
run = load_run({run!r})
values = torch.from_numpy(np.load({images!r}))
inputs = InputSet(values, [str(i) for i in range(len(values))], None, [], "bench")
result = predict(run, inputs, {out!r}, write=False, progress=False)
print("RESULT", result["seconds"], 0)
"""


def timed(code: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    line = next(s for s in out.stdout.splitlines() if s.startswith("RESULT"))
    _, loop, whole = line.split()
    return float(loop), float(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=10000)
    args = parser.parse_args()
    repo = str(Path(__file__).resolve().parents[1])
    work = Path(tempfile.mkdtemp(prefix="aelab-bench-predict-"))
    try:
        env = dict(os.environ, WANDB_MODE="disabled")
        subprocess.run(
            [
                str(BIN / "aelab-train"),
                "model=conv",
                "data.limit_train=2048",
                "trainer.max_epochs=1",
                "test=false",
                "callbacks.progress_bar=null",
                "callbacks.generation_grids=null",
                f"paths.output_dir={work}/outputs",
                "name=bench",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=work,
        )
        run = work / "outputs" / "runs" / "bench"
        ckpt = str(next((run / "checkpoints").glob("best*.ckpt")))
        import numpy as np

        from aelab.data.readers import read_idx

        images = work / "images.npy"
        np.save(
            images, read_idx(Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")).numpy()[: args.images]
        )
        results = {k: [] for k in ("aelab_loop", "bare_loop", "aelab_whole", "bare_whole")}
        for r in range(args.rounds):
            out = work / f"out{r}"
            out.mkdir()
            results["aelab_loop"].append(timed(AELAB_LOOP.format(run=str(run), images=str(images), out=str(out)))[0])
            results["bare_loop"].append(
                timed(BARE.format(repo=repo, ckpt=ckpt, images=str(images), out=str(out), write=False))[0]
            )
            started = time.perf_counter()
            subprocess.run(
                [str(BIN / "aelab-predict"), f"run={run}", f"input={images}", f"out={out}/aelab"],
                check=True,
                capture_output=True,
                env=env,
                cwd=work,
            )
            results["aelab_whole"].append(time.perf_counter() - started)
            started = time.perf_counter()
            (out / "bare").mkdir()
            timed(BARE.format(repo=repo, ckpt=ckpt, images=str(images), out=str(out / "bare"), write=True))
            results["bare_whole"].append(time.perf_counter() - started)
        med = {k: statistics.median(v) for k, v in results.items()}
        n = args.images
        print(
            f"predict {n} Fashion-MNIST test images, conv AE, batch 512, CPU ({os.cpu_count()} cores), median of "
            f"{args.rounds}:"
        )
        print(
            f"  I/O excluded: aelab {n / med['aelab_loop']:,.0f} images/s vs bare model(x) loop "
            f"{n / med['bare_loop']:,.0f} "
            f"images/s = {med['bare_loop'] / med['aelab_loop']:.3f} (target >= 0.9)"
        )
        print(
            f"  I/O included (whole command): aelab-predict {med['aelab_whole']:.2f} s vs bare script "
            f"{med['bare_whole']:.2f} s "
            f"= {med['bare_whole'] / med['aelab_whole']:.3f} of the bare throughput"
        )
        print("  " + json.dumps({k: [round(x, 3) for x in v] for k, v in results.items()}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
