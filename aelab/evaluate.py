"""``aelab-eval``: measure what autoencoders are used for, on trained run folders.

    aelab-eval run=outputs/runs/<run> tasks=[anomaly,probe,denoise,artifacts]
    aelab-eval run=outputs/sweeps/<sweep>            # every run of the sweep
    aelab-train data.normal_class=3 eval.tasks=[anomaly]   # at the end of training

Tasks (details in ``aelab/evaluation/``): ``anomaly`` (one-class AUROC/AP),
``probe`` (linear probe and k-NN accuracy of the codes, code scatter),
``denoise`` (PSNR/SSIM against the noisy-input baseline per corruption level),
``artifacts`` (checkerboard score after training and at initialisation),
``generation`` (samples, interpolations, traversals), ``nll`` (VAEs: IWAE
NLL with more samples) and ``pca`` (exact PCA at the same bottleneck on the same
split; principal angles to a linear decoder). Results go into the run's ``metrics.json`` (``final``
gets the ``eval/*`` numbers, ``eval`` the details), PNGs into ``<run>/eval/``,
and into the run's W&B run when it has one.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from aelab import config_dir
from aelab.errors import AelabError, ConfigError, RunFolderError, find_aelab_error
from aelab.runs import METRICS_FILE, LoadedRun, find_run_dirs, load_run, now_iso, read_metrics, wandb_run_id, write_json_atomic

log = logging.getLogger("aelab.eval")

TASKS = ("anomaly", "probe", "denoise", "artifacts", "generation", "nll", "pca")
VAE_ONLY = ("nll",)


def default_tasks(run: LoadedRun) -> list[str]:
    """Tasks when none are named: one-class runs get anomaly detection, others the probe and denoising."""
    if run.datamodule.normal_class is not None:
        return ["anomaly", "artifacts", "generation"]
    return ["probe", "denoise", "artifacts", "generation"]


def fresh_model(run: LoadedRun):
    """The run's model at initialisation: same config and seed, no training."""
    import lightning as L
    from hydra.utils import instantiate

    L.seed_everything(int(run.cfg.get("seed", 0)), verbose=False)
    noise = instantiate(run.cfg.noise, _convert_="all")
    model = instantiate(run.cfg.model, input_shape=list(run.datamodule.dims), noise=noise, _convert_="all")
    return model.to(run.model.device).eval()


def run_task(task: str, run: LoadedRun, options: DictConfig | dict, out_dir: Path) -> dict[str, Any]:
    """Run one evaluation task; returns ``{"metrics": ..., "details": ..., "files": ...}``."""
    from aelab.evaluation.common import is_vae

    opts = options.get(task) or {}
    if isinstance(opts, DictConfig):
        opts = OmegaConf.to_container(opts, resolve=True)
    if task in VAE_ONLY and not is_vae(run.model):
        raise ConfigError(f"the {task} task needs a VAE run; {run.run_dir.name} is a deterministic autoencoder")
    if task == "anomaly":
        from aelab.evaluation.anomaly import evaluate_anomaly

        return evaluate_anomaly(run, opts)
    if task == "probe":
        from aelab.evaluation.features import evaluate_probe

        return evaluate_probe(run, opts, out_dir)
    if task == "denoise":
        from aelab.evaluation.denoising import evaluate_denoising

        return evaluate_denoising(run, opts, out_dir)
    if task == "artifacts":
        from aelab.evaluation.artifacts import evaluate_artifacts

        return evaluate_artifacts(run, opts, fresh_model(run))
    if task == "generation":
        from aelab.callbacks.generation import GenerationGrids, write_generation

        existing = {p.stem: p for p in (run.run_dir / "samples").glob("*.png") if p.stem in ("samples", "interpolation", "traversal")}
        if existing and not opts.get("regenerate", False):
            return {"metrics": {}, "files": existing, "details": {"reused": sorted(existing)}}
        grids = GenerationGrids(out_dir, **{k: v for k, v in opts.items() if k != "regenerate"})
        return {"metrics": {}, "files": write_generation(run.model, run.datamodule, out_dir, options=grids), "details": {}}
    if task == "pca":
        from aelab.evaluation.baselines import evaluate_pca

        return evaluate_pca(run, opts)
    if task == "nll":
        from aelab.evaluation.common import map_batches

        k = int(opts.get("samples", 5000))
        n = opts.get("num_images")
        generator = torch.Generator(device=run.model.device).manual_seed(0)
        bound = map_batches(run.model, run.datamodule.split_dataloader("test", limit=n),
                            lambda x, b: {"bound": run.model.iwae_bound(x, k, generator)}, n)["bound"]
        return {"metrics": {"eval/nll_iwae": float(-bound.mean()), "eval/nll_iwae_samples": k},
                "details": {"images": int(len(bound)), "samples": k}}
    raise ConfigError(f"unknown evaluation task {task!r}; choose from {list(TASKS)}")


def evaluate_run(run: LoadedRun, tasks: list[str] | None, options: DictConfig | dict, loggers=None, step: int = 0) -> dict[str, Any]:
    """Run ``tasks`` on a loaded run, record them in ``metrics.json`` and the loggers; returns the eval metrics."""
    tasks = list(tasks) if tasks else default_tasks(run)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown evaluation task(s) {unknown}; choose from {list(TASKS)}")
    out_dir = run.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    files: dict[str, str] = {}
    for task in tasks:
        log.info("%s: %s", run.run_dir.name, task)
        result = run_task(task, run, options, out_dir)
        metrics.update(result.get("metrics", {}))
        details[task] = result.get("details", {})
        files.update({f"{task}/{k}": str(v) for k, v in result.get("files", {}).items()})
    record_eval(run.run_dir, metrics, details, files, str(run.checkpoint))
    publish_eval(run, metrics, files, loggers, step)
    return metrics


def record_eval(run_dir: Path, metrics: dict, details: dict, files: dict, checkpoint: str) -> None:
    """Merge the results into ``metrics.json``: numbers into ``final``, everything under ``eval``."""
    data = read_metrics(run_dir)
    if data is None:
        raise RunFolderError(f"{run_dir} has no {METRICS_FILE}")
    section = data.setdefault("eval", {})
    section.setdefault("metrics", {}).update(metrics)
    section.setdefault("details", {}).update(details)
    section.setdefault("files", {}).update(files)
    section["checkpoint"] = checkpoint
    section["evaluated_at"] = now_iso()
    data.setdefault("final", {}).update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    write_json_atomic(run_dir / METRICS_FILE, data)


def publish_eval(run: LoadedRun, metrics: dict, files: dict, loggers=None, step: int = 0) -> None:
    """Send the results to the training's loggers, or to the run's own W&B run when called afterwards."""
    images = {k: Path(v) for k, v in files.items() if str(v).endswith(".png")}
    if loggers is not None:  # at the end of training: the run's loggers are still open
        from lightning.pytorch.loggers import WandbLogger

        for logger in loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.summary.update(metrics)
                logger.experiment.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
        return
    resume_wandb_and_log(run, metrics, images)


def resume_wandb_and_log(run: LoadedRun, metrics: dict, images: dict[str, Path]) -> None:
    """If the run was tracked in W&B, resume that W&B run (same id and mode) and add the results."""
    run_id = wandb_run_id(run.run_dir)
    if run_id is None:
        return
    import wandb

    from aelab.tracking import resolve_wandb_mode

    wandb_cfg = run.cfg.get("logger", {}).get("wandb") or {}
    mode = resolve_wandb_mode(wandb_cfg.get("mode"))
    try:
        wb = wandb.init(id=run_id, resume="allow", project=wandb_cfg.get("project", "aelab"), entity=wandb_cfg.get("entity"),
                        dir=str(run.run_dir), mode=mode, settings=wandb.Settings(init_timeout=60, console="off"))
    except Exception as exc:  # never lose the results already written to metrics.json
        log.warning("W&B run %s not updated (%s); the results are in metrics.json", run_id, exc)
        return
    wb.summary.update(metrics)
    if images:
        wb.log({f"eval_images/{k}": wandb.Image(str(p)) for k, p in images.items()})
    wb.finish()


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but no GPU is visible")
    return name


def evaluate_path(path: str | Path, options: DictConfig | dict, device: str = "cpu") -> dict[str, Any]:
    """Evaluate every run folder at ``path``; returns ``{run_dir: metrics or error}``."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path} does not exist")
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise RunFolderError(f"{path} holds no aelab runs (no .hydra/config.yaml): point run= at a run or sweep folder")
    results: dict[str, Any] = {}
    for run_dir in run_dirs:
        status = (read_metrics(run_dir) or {}).get("status")
        if status != "completed":
            results[str(run_dir)] = RunFolderError(f"not evaluated: its status is {status or 'unknown (no metrics.json)'}")
            continue
        try:
            run = load_run(run_dir, which=str(options.get("checkpoint", "best")), device=device)
            results[str(run_dir)] = evaluate_run(run, options.get("tasks"), options)
        except AelabError as exc:
            results[str(run_dir)] = exc
        except Exception as exc:  # a broken run must not stop a sweep's evaluation
            log.error("%s: %s", run_dir, "".join(traceback.format_exception(exc)))
            results[str(run_dir)] = exc
    return results


def evaluate_main(cfg: DictConfig) -> int:
    """The body of ``aelab-eval``: evaluate, print a summary, return the exit code."""
    try:
        device = pick_device(str(cfg.device))
        results = evaluate_path(cfg.run, cfg, device)
    except AelabError as exc:
        print(f"aelab-eval: error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for run_dir, result in results.items():
        if isinstance(result, BaseException):
            failures += 1
            err = find_aelab_error(result) or result
            print(f"{run_dir}: error: {err}", file=sys.stderr)
            continue
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float) and k.count("/") == 1)
        print(f"{run_dir}: {shown}")
    if len(results) > 1:
        print(f"evaluated {len(results) - failures} of {len(results)} runs")
    return 1 if failures else 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    code = evaluate_main(cfg)
    if code:
        sys.exit(code)


def main() -> None:
    """Console entry point ``aelab-eval``."""
    logging.getLogger("lightning").setLevel(logging.WARNING)
    _hydra_main()


if __name__ == "__main__":
    main()
