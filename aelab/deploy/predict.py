"""``aelab-predict``: a trained run applied to new inputs — codes, reconstructions, anomaly scores and maps to files.

    aelab-predict run=outputs/runs/<run> input=/data/new_images
    aelab-predict run=outputs/runs/<run> input=table.npz outputs=[codes,score]
    aelab-predict run=outputs/runs/<run> input=fashion_mnist split=test
    aelab-predict run=outputs/runs/<dae run> input=/data/noisy denoise=true

Inputs are preprocessed as the run's training images were (:class:`aelab.data.inputs.InputSpec`:
size, channels, scaling). Writes into ``out`` (default ``<run>/predict/<input name>/``):

* ``index.csv`` — row, source (file name, array row or dataset id), label when known;
* ``codes.npy`` — ``[N, bottleneck]`` (the mean codes for VAEs);
* ``recon.npy`` and ``recon_grid.png`` (inputs over reconstructions, the first ``grid_images``; real-valued data:
  the array only, unclamped);
* ``scores.csv`` — per input ``mse`` (and ``elbo`` for VAEs), as ``aelab-eval``'s anomaly task scores
  (``score=mean|topk``, ``topk``);
* ``maps.npy`` and ``maps_grid.png`` — per-pixel squared error maps (images only);
* with ``denoise=true``, ``denoised/`` — each input's reconstruction as a PNG named like the input (images in
  [0, 1]).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from aelab.errors import ConfigError

log = logging.getLogger("aelab.deploy.predict")

OUTPUTS = ("codes", "recon", "score", "map")


class ArrayWriter:
    """An ``.npy`` written batch by batch (memory-mapped) under a temporary name of :mod:`aelab.store.files`
    (it carries the writer's PID), renamed into place when complete and removed when the prediction fails."""

    def __init__(self, path: Path, rows: int):
        import os

        from aelab.store.files import TMP_MARK

        self.path, self.rows, self.array, self.start = path, rows, None, 0
        self.tmp = path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")

    def add(self, values: np.ndarray) -> None:
        if self.array is None:
            self.array = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=np.float32, shape=(self.rows, *values.shape[1:])
            )
        self.array[self.start : self.start + len(values)] = values
        self.start += len(values)

    def close(self) -> None:
        if self.array is not None:
            self.array.flush()
            self.array = None
            self.tmp.replace(self.path)

    def discard(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)


def predict(
    run,
    source,
    out_dir: Path | None = None,
    outputs=OUTPUTS,
    denoise: bool = False,
    split: str = "test",
    score: str = "mean",
    topk: float = 0.01,
    batch_size: int = 512,
    grid_images: int = 32,
    progress: bool = True,
    write: bool = True,
) -> dict:
    """Apply a loaded run to ``source`` (a path, a dataset name or an already read ``InputSet``);
    returns ``{"out": folder, "files": {...}, "rows": N, "seconds": ...}``. ``write=False`` computes without writing
    files (to time the computation alone)."""
    import torch

    from aelab.analysis.images import image_grid, save_png
    from aelab.data.inputs import read_input
    from aelab.deploy import output_folder
    from aelab.evaluation.anomaly import heatmap, image_score
    from aelab.store.files import remove_dead_temporaries, write_text_atomic

    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise ConfigError(f"outputs={list(outputs)}: {unknown} are not among {list(OUTPUTS)}")
    if score not in ("mean", "topk"):
        raise ConfigError(f"score={score!r} is not one of ['mean', 'topk']")
    spec = run.input_spec
    started = time.perf_counter()
    if out_dir and write:  # a file or unwritable folder is named before the inputs are read
        out_dir = output_folder(out_dir, Path(out_dir), run_dir=run.run_dir)
    inputs = (
        source
        if not isinstance(source, str)
        else read_input(source, spec, split, int(run.cfg.get("seed", 0)), own=(run.metrics.get("data"), run.data))
    )
    default_out = run.run_dir / "predict" / inputs.name
    out_dir = output_folder(out_dir, default_out, run_dir=run.run_dir) if write else Path(out_dir or default_out)
    for leftover in remove_dead_temporaries(out_dir):  # a killed earlier prediction's
        log.info("removed %s, left by a prediction that was stopped", leftover)
    model, n = run.model, len(inputs.values)
    maps_wanted = "map" in outputs and spec.is_images
    pictures = spec.is_images and model.value_range == "unit"  # PNGs of images in [0, 1]; real values are no picture
    writers = {
        k: ArrayWriter(out_dir / f"{k}.npy", n)
        for k, wanted in (("codes", "codes" in outputs), ("recon", "recon" in outputs), ("maps", maps_wanted))
        if wanted and write
    }
    score_rows: dict[str, list] = {}
    shown: dict[str, list] = {"x": [], "recon": [], "maps": []}
    denoised_dir = out_dir / "denoised" if denoise and pictures else None
    batches = range(0, n, batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description=f"predict {inputs.name}", total=len(batches), transient=True)
    try:
        with torch.no_grad():
            for start in batches:
                x = spec.prepare(inputs.values[start : start + batch_size]).to(model.device)
                codes, recon = model.infer(x)  # one pass: codes and reconstructions
                if "codes" in writers:
                    writers["codes"].add(codes.float().cpu().numpy())
                if "recon" in writers:
                    writers["recon"].add(recon.float().cpu().numpy())
                maps = model.error_map(x, recon) if (maps_wanted or "score" in outputs) else None
                if "maps" in writers:
                    writers["maps"].add(maps.float().cpu().numpy())
                if "score" in outputs:
                    values = {"mse": image_score(maps, score, topk)}
                    if "elbo" in model.features:
                        values["elbo"] = model.anomaly_scores(x)["elbo"]
                    for key, v in values.items():
                        score_rows.setdefault(key, []).append(v.float().cpu().numpy())
                if write and pictures and sum(len(v) for v in shown["x"]) < grid_images:
                    shown["x"].append(x.cpu())
                    shown["recon"].append(recon.cpu())
                    if maps is not None:
                        shown["maps"].append(maps.float().cpu())
                if denoised_dir is not None and write:
                    _write_denoised(denoised_dir, inputs.sources[start : start + batch_size], recon.cpu())
    except BaseException:  # an error, Ctrl-C or SIGTERM: no half-written array is left behind
        for writer in writers.values():
            writer.discard()
        raise
    for writer in writers.values():
        writer.close()
    if not write:
        return {"out": out_dir, "files": {}, "rows": n, "seconds": time.perf_counter() - started}
    files = {k: str(w.path) for k, w in writers.items()}
    index = ["row,source,label"] + [
        f"{i},{_csv(src)},{'' if inputs.labels is None else inputs.labels[i]}" for i, src in enumerate(inputs.sources)
    ]
    write_text_atomic(out_dir / "index.csv", "\n".join(index) + "\n")
    files["index"] = str(out_dir / "index.csv")
    if score_rows:
        columns = {k: np.concatenate(v) for k, v in score_rows.items()}
        names = ["mse", *[k for k in columns if k != "mse"]]
        lines = ["row,source," + ",".join(names)]
        lines += [
            f"{i},{_csv(src)}," + ",".join(f"{columns[k][i]:.8g}" for k in names)
            for i, src in enumerate(inputs.sources)
        ]
        write_text_atomic(out_dir / "scores.csv", "\n".join(lines) + "\n")
        files["scores"] = str(out_dir / "scores.csv")
    if shown["x"]:
        x, recon = torch.cat(shown["x"])[:grid_images], torch.cat(shown["recon"])[:grid_images]
        per_row = min(8, len(x))
        rows = [part for pair in zip(x.split(per_row), recon.split(per_row)) for part in pair if len(part) == per_row]
        if rows:
            labels = ["input", "reconstruction"] * (len(rows) // 2)
            files["recon_grid"] = str(save_png(image_grid(rows, row_labels=labels), out_dir / "recon_grid.png"))
        if shown["maps"] and maps_wanted:
            maps = torch.cat(shown["maps"])[:grid_images]
            rows = [
                part
                for pair in zip(x.split(per_row), heatmap(maps).split(per_row))
                for part in pair
                if len(part) == per_row
            ]
            if rows:
                labels = ["input", "error"] * (len(rows) // 2)
                files["maps_grid"] = str(save_png(image_grid(rows, row_labels=labels), out_dir / "maps_grid.png"))
    if denoised_dir is not None:
        files["denoised"] = str(denoised_dir)
    return {"out": out_dir, "files": files, "rows": n, "seconds": time.perf_counter() - started}


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def _write_denoised(folder: Path, sources: list[str], images) -> None:
    import re

    from aelab.analysis.images import save_png

    for source, image in zip(sources, images):
        row = re.fullmatch(r"(.*)\[(\d+)\]", source)  # an array row: <file>[<row>]
        name = f"{Path(row.group(1)).stem}_{int(row.group(2)):06d}.png" if row else Path(source).with_suffix(".png")
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(image.expand(3, -1, -1) if image.shape[0] == 1 else image, path)
