"""``aelab-export``: a trained encoder, decoder or whole autoencoder as ONNX, TorchScript or safetensors weights,
checked against PyTorch.

    aelab-export run=outputs/runs/<run> format=onnx part=autoencoder
    aelab-export run=outputs/runs/<run> format=torchscript part=encoder
    aelab-export run=outputs/runs/<run> format=safetensors part=autoencoder

Writes ``<run>/export/<part>.onnx`` (``.pt`` for TorchScript, ``.safetensors``) with a dynamic batch dimension and
``<part>.<format>.json`` beside it (one description per format: exporting another format keeps the first's):
input/output names, shapes, the preprocessing inputs need (:class:`aelab.data.inputs.InputSpec`), and the
parity figure. After writing, the exported file is run — onnxruntime for ONNX, ``torch.jit.load`` for
TorchScript, the run's model rebuilt from its config with the file's weights for safetensors — on a batch of
the run's real test inputs (and on a batch of another size, to prove the dynamic batch dimension) and compared
with the PyTorch model; a largest absolute difference above ``tolerance`` (1e-4 in fp32) fails the command.

``safetensors`` is the format to share weights in: it holds tensors and text only, so loading it cannot run
code (a pickled ``.ckpt`` or TorchScript ``.pt`` can). It holds the state dict of the part (the encoder's
weights without the decoder's, and so on) with the run's model config and preprocessing as metadata.

The parts:

* ``encoder``: images → codes (VAEs: images → mean and log-variance);
* ``decoder``: codes → images in [0, 1] (a max-unpooling decoder uses the fixed top-left switches
  it decodes sampled codes with, as ``model.decode`` does);
* ``autoencoder``: images → reconstructions in [0, 1] (max-unpooling with the encoder's own switches;
  VAEs through the mean code).

A run on real-valued data (``value_range: real`` in its record, e.g. ``data.normalize=none``) exports unclamped
outputs, and its description says so (``output_values``): the parity check compares those.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from aelab.deploy import output_folder
from aelab.errors import ConfigError

log = logging.getLogger("aelab.deploy.export")

FORMATS = ("onnx", "torchscript", "safetensors")
PARTS = ("encoder", "decoder", "autoencoder")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch.jit.load", "safetensors": "safetensors into the rebuilt model"}


def description_path(path: Path, fmt: str) -> Path:
    """The JSON description of an exported file: ``<part>.<format>.json``, one per format."""
    return path.with_name(f"{path.stem}.{fmt}.json")


def part_weights(model, part: str) -> dict:
    """The tensors ``part`` needs: the model's state dict without the decoder's (encoder) or the encoder's
    (decoder) weights; every tensor its own copy (safetensors stores no shared memory)."""
    skip = {"encoder": "decoder.", "decoder": "encoder.", "autoencoder": None}[part]
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
        if skip is None or not k.startswith(skip)
    }


def wrap(model, part: str):
    """An ``nn.Module`` computing ``part`` of ``model`` with plain tensors in and out."""
    import torch
    from torch import nn

    vae = "elbo" in model.features

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor):
            if vae:
                mu, logvar = self.model.posterior(image)
                return mu, logvar
            return self.model.encode(image)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, code: torch.Tensor):
            return self.model.decode(code)

    class Whole(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor):
            return self.model.in_range(self.model.reconstruct(image))

    return {"encoder": Encoder, "decoder": Decoder, "autoencoder": Whole}[part]().eval()


def io_names(model, part: str) -> tuple[list[str], list[str]]:
    vae = "elbo" in model.features
    return {
        "encoder": (["image"], ["mean", "log_variance"] if vae else ["code"]),
        "decoder": (["code"], ["image"]),
        "autoencoder": (["image"], ["reconstruction"]),
    }[part]


def example_inputs(run, part: str, n: int):
    """Real test inputs of the run (decoders: the codes of real test images)."""
    import torch

    x = run.data.images("test", limit=n).to(run.model.device)
    if part == "decoder":
        with torch.no_grad():
            return run.model.encode(x)
    return x


def export(
    run, fmt: str, part: str, out_dir: Path | None = None, batch: int = 16, tolerance: float = 1e-4, opset: int = 18
) -> dict:
    """Write ``part`` of a loaded run as ``fmt``, check it against PyTorch, describe it in a JSON; returns that
    description.
    """
    import torch

    from aelab.store.files import atomic_path, write_json_atomic

    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one of {list(FORMATS)}")
    if part not in PARTS:
        raise ConfigError(f"part={part!r} is not one of {list(PARTS)}")
    model = run.model.float().eval()
    module = wrap(model, part)
    inputs, outputs = io_names(model, part)
    out_dir = output_folder(out_dir, run.run_dir / "export", run_dir=run.run_dir)
    path = out_dir / f"{part}{SUFFIXES[fmt]}"
    x = example_inputs(run, part, batch)
    other = example_inputs(run, part, batch + 5)[: max(1, min(batch + 5, 3 * batch // 2))]
    started = time.perf_counter()
    with torch.no_grad(), atomic_path(path) as tmp:
        if fmt == "onnx":
            import warnings

            dynamic = {name: {0: "batch"} for name in inputs + outputs}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    module,
                    (x,),
                    dynamo=True,
                    input_names=inputs,
                    output_names=outputs,
                    dynamic_axes=dynamic,
                    opset_version=opset,
                    verbose=False,
                )
            program.save(str(tmp))
        elif fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(part_weights(model, part), str(tmp), metadata=_weights_metadata(run, part))
        else:
            model._jit_is_scripting = True  # Lightning's own flag while it scripts: `trainer` reads None, not an error
            try:
                torch.jit.save(torch.jit.trace(module, (x,), check_trace=False), str(tmp))
            finally:
                model._jit_is_scripting = False
    seconds = time.perf_counter() - started
    exported = load_exported(path, fmt, run, part)
    diffs = [parity(exported, module, t) for t in (x, other)]
    worst = max(diffs)
    spec = run.input_spec
    description = {
        "run": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "format": fmt,
        "part": part,
        "file": str(path),
        "inputs": [{"name": n, "shape": ["batch", *list(x.shape[1:])], "dtype": "float32"} for n in inputs],
        "outputs": [{"name": n, "shape": ["batch", *s]} for n, s in zip(outputs, _output_shapes(module, x))],
        "preprocessing": spec.describe() if part != "decoder" else {"input": f"codes of size {x.shape[1]}"},
        "output_values": output_values(model, part),
        "opset": opset if fmt == "onnx" else None,
        "parity": {
            "max_abs_diff": worst,
            "tolerance": tolerance,
            "batches": [len(x), len(other)],
            "runtime": RUNTIMES[fmt],
        },
        "export_seconds": round(seconds, 2),
    }
    write_json_atomic(description_path(path, fmt), description)
    if not worst <= tolerance:
        raise ConfigError(
            f"the exported {part} differs from the PyTorch model by up to {worst:.3g} (> {tolerance:g}) on real "
            f"test inputs; {path} is kept for inspection"
        )
    return description


def output_values(model, part: str) -> str:
    """What the exported part's outputs hold, in words (the description's ``output_values``)."""
    if part == "encoder":
        return "codes"
    return "values in [0, 1]" if model.value_range == "unit" else "real values, unclamped"


def _output_shapes(module, x) -> list[list[int]]:
    import torch

    with torch.no_grad():
        out = module(x)
    out = out if isinstance(out, tuple) else (out,)
    return [list(o.shape[1:]) for o in out]


def _weights_metadata(run, part: str) -> dict[str, str]:
    """What a safetensors file says about itself (text only): the part, the run's model config and preprocessing."""
    import json

    from omegaconf import OmegaConf

    return {
        "format": "aelab",
        "part": part,
        "run": str(run.run_dir),
        "model_config": OmegaConf.to_yaml(run.cfg.model, resolve=True),
        "preprocessing": json.dumps(run.input_spec.describe()),
        "output_values": output_values(run.model, part),
    }


def load_exported(path: Path, fmt: str, run, part: str):
    """The exported file loaded back as a function of a tensor, as its runtime runs it: an ONNX Runtime session,
    ``torch.jit.load``, or the run's model rebuilt from its config (fresh weights) with the safetensors weights."""
    import torch

    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})
    if fmt == "safetensors":
        from safetensors.torch import load_file

        fresh = run.fresh_model().float()
        missing, unexpected = fresh.load_state_dict(load_file(str(path)), strict=False)
        if unexpected:
            raise ConfigError(f"{path} holds weights the run's model does not have: {unexpected[:3]}")
        loaded = wrap(fresh.cpu().eval(), part)
    else:
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run_module(x):
        with torch.no_grad():
            out = loaded(x.cpu())
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    return run_module


def parity(exported, module, x) -> float:
    """The largest absolute difference between the exported file's outputs (:func:`load_exported`) and the PyTorch
    module's on ``x``."""
    import torch

    with torch.no_grad():
        expected = module(x)
    expected = [e.cpu().numpy() for e in (expected if isinstance(expected, tuple) else (expected,))]
    got = exported(x)
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected)))
