#!/usr/bin/env python
"""Run one paper-style ablation: its sweep (``experiment=<name>``), then ``aelab-compare``.

    .venv/bin/python scripts/run_ablation.py bottleneck_linear_vs_pca              # quick variant (CPU, minutes)
    .venv/bin/python scripts/run_ablation.py upsampling --scale full --n-jobs 1    # the paper-style protocol
    .venv/bin/python scripts/run_ablation.py denoising -- trainer=gpu               # extra Hydra overrides

The sweep lands in ``outputs/sweeps/<name>_<scale>`` (re-running continues it:
completed jobs are skipped), the comparison in its ``comparison/`` folder, and
``ablation.json`` records the command, the hardware and the wall time that
``scripts/write_results.py`` puts into ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ABLATIONS = (
    "bottleneck_linear_vs_pca",
    "bottleneck_mlp_vs_conv",
    "upsampling",
    "denoising",
    "anomaly_oneclass",
    "vae_beta_latent",
    "vae_reference",
    "bottleneck_overfitting",
    "objectives",
    "disentanglement_beta",
)


def hardware() -> dict:
    """CPU model, cores and GPU of this machine, as a short description."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def outputs_dir() -> Path:
    return Path(os.environ.get("AELAB_ROOT", ".")) / "outputs"


def run(name: str, scale: str, n_jobs: int, extra: list[str], compare: bool = True) -> Path:
    """Run the sweep and the comparison; returns the sweep folder."""
    bin_dir = Path(sys.executable).parent
    sweep_name = f"{name}_{scale}"
    command = [
        str(bin_dir / "aelab-train"),
        "-m",
        f"experiment={name}",
        f"ablation.scale={scale}",
        f"sweep.name={sweep_name}",
    ]
    if n_jobs > 1:
        command += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    command += ["callbacks.progress_bar=null", *extra]
    shown = " ".join(["aelab-train", *command[1:]])
    print(f"$ {shown}", flush=True)
    started = time.time()
    result = subprocess.run(command)
    elapsed = time.time() - started
    sweep_dir = outputs_dir() / "sweeps" / sweep_name
    if not sweep_dir.is_dir():
        raise SystemExit(f"the {name} sweep failed (exit code {result.returncode}); see the output above")
    jobs_time = 0.0
    for metrics in sweep_dir.glob("*/metrics.json"):
        jobs_time += float(json.loads(metrics.read_text()).get("wall_time_s") or 0)
    record = {
        "name": name,
        "scale": scale,
        "command": f"python scripts/run_ablation.py {name} --scale {scale}"
        + (f" --n-jobs {n_jobs}" if n_jobs > 1 else "")
        + (" -- " + " ".join(extra) if extra else ""),
        "sweep_command": shown,
        "finished_at": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "wall_time_s": round(elapsed, 1),
        "jobs_wall_time_s": round(jobs_time, 1),
        "hardware": hardware(),
    }
    previous = sweep_dir / "ablation.json"
    if previous.is_file():  # a continued sweep: keep the first full run's timing next to this one
        old = json.loads(previous.read_text())
        record["earlier_runs"] = old.get("earlier_runs", []) + [
            {k: old[k] for k in ("finished_at", "wall_time_s", "failed") if k in old}
        ]
    if result.returncode != 0:  # some jobs failed: the record keeps this run's time, so a continuation adds to it
        record["failed"] = True
    (sweep_dir / "ablation.json").write_text(json.dumps(record, indent=2) + "\n")
    if result.returncode != 0:
        raise SystemExit(
            f"the {name} sweep had failed jobs (exit code {result.returncode}); see the output above. "
            "The same command continues it (completed jobs are skipped)"
        )
    if compare:
        from aelab.analysis.compare import compare as compare_runs

        comparison = compare_runs([sweep_dir], metrics=ablation_metrics(sweep_dir))
        print(comparison.files["comparison.md"].read_text())
        print(f"report: {comparison.files['report.md']}")
    return sweep_dir


def ablation_metrics(sweep_dir: Path) -> list[str] | None:
    """The metric columns the experiment config names (``ablation.metrics``), those present."""
    from omegaconf import OmegaConf

    from aelab.store.record import RunRecord

    configs = sorted(sweep_dir.glob("*/.hydra/config.yaml"))
    if not configs:
        return None
    wanted = list(OmegaConf.load(configs[0]).get("ablation", {}).get("metrics") or [])
    present = set()
    for cfg in configs:
        record = RunRecord.read(cfg.parent.parent)
        data = record.data if record else {}
        present |= set(data.get("final", {})) | {"params", "wall_time_s"}
    return [m for m in wanted if m in present] or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=ABLATIONS)
    parser.add_argument(
        "--scale",
        choices=("quick", "cpu", "full"),
        default="quick",
        help="quick (minutes on a CPU), cpu (the full protocol sized for a CPU, where the experiment defines it), full",
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel jobs (joblib launcher); 1 = sequential")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args()
    from omegaconf import OmegaConf

    scales = [
        k
        for k in OmegaConf.load(
            Path(__file__).resolve().parents[1] / "conf" / "experiment" / f"{args.name}.yaml"
        ).ablation
        if k not in ("name", "scale", "metrics")
    ]
    if args.scale not in scales:
        raise SystemExit(f"run_ablation.py: {args.name} has no --scale {args.scale}; it defines {', '.join(scales)}")
    run(args.name, args.scale, args.n_jobs, args.overrides, compare=not args.no_compare)


if __name__ == "__main__":
    main()
