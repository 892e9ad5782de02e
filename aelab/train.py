"""``aelab-train``: train, test and summarise one autoencoder run (or a Hydra sweep of them).

    aelab-train model=mlp model.bottleneck=8
    aelab-train -m model=mlp,conv model.bottleneck=2,4,8,16

The flow of one job: seed → instantiate the DataModule, corruption, model,
callbacks, loggers and Trainer from the config → fit → test → write
``metrics.json`` in the run folder. In a sweep, a job whose folder already
holds a completed ``metrics.json`` is skipped, and a job that fails is recorded
(``status: failed``) without stopping the others.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from aelab import config_dir
from aelab.config_checks import config_problems, local_ddp_sweep_problem, world_size
from aelab.errors import ConfigError, find_aelab_error
from aelab.runs import METRICS_FILE, now_iso, read_metrics, wandb_run_id, write_json_atomic

log = logging.getLogger("aelab.train")

# W&B keeps these summaries per run, so dashboards show the best and the final values.
WANDB_SUMMARIES = {"val/recon_loss": "min", "gap/recon_loss": "last", "val/psnr": "max", "val/elbo": "max", "gap/elbo": "last"}


def _quiet_known_warnings() -> None:
    """Silence warnings that do not apply to aelab's in-memory data path."""
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*configured with multiple `ModelCheckpoint` callbacks.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # Lightning prints through its own console handler; let Hydra's handlers (console + <run>/train.log) do it.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())


class _DropAdverts(logging.Filter):
    """Drop Lightning's product tips from the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.getMessage())


def hydra_choices() -> dict[str, str]:
    """The chosen option of each config group (``model``: ``conv``, ...), when Hydra runs."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None and not k.startswith("hydra")}


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_name() -> str | None:
    """The sweep folder's name for a multirun job (used as the W&B group)."""
    return Path(str(HydraConfig.get().sweep.dir)).name if is_multirun() else None


def configure_threads(cfg: DictConfig) -> int:
    """Set torch's CPU threads: ``cfg.threads``, or cores / n_jobs under the joblib launcher."""
    threads = cfg.get("threads")
    trainer_cfg = cfg.get("trainer") or {}
    processes = world_size(trainer_cfg) // max(1, int(trainer_cfg.get("num_nodes", 1) or 1))
    if threads is None and processes > 1 and str(trainer_cfg.get("accelerator")) == "cpu":
        threads = max(1, (os.cpu_count() or 1) // processes)  # ddp_cpu: the processes share the cores
    if threads is None and HydraConfig.initialized():
        launcher = HydraConfig.get().get("launcher") or {}
        if "joblib" in str(launcher.get("_target_", "")):
            n_jobs = int(launcher.get("n_jobs") or 1)
            cores = os.cpu_count() or 1
            threads = max(1, cores // (cores if n_jobs < 1 else n_jobs))
    import torch

    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    return torch.get_num_threads()


def instantiate_group(group: DictConfig | None, **extra: Any) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers), skipping nulls."""
    objects = []
    for name, conf in (group or {}).items():
        if conf is None:
            continue
        if not isinstance(conf, DictConfig) or "_target_" not in conf:
            raise ConfigError(f"entry {name!r} of a callbacks/logger group needs a _target_ (got {conf})")
        objects.append(instantiate(conf, **extra.get(name, {})))
    return objects


def loggable_config(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The run's config as a plain dict for loggers, with the most-swept knobs at the top level."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    plain.pop("hydra", None)
    plain["bottleneck"] = cfg.model.get("bottleneck")  # top level: dashboards plot against it directly
    plain["overrides"] = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    for group in ("model", "data", "noise", "trainer", "experiment"):
        if group in choices:
            plain[f"{group}_name"] = choices[group]
    return plain


class TrainingJob:
    """One run: build everything from the config, fit, test, write ``metrics.json``.

    Its attributes fill in as the run goes, so a failure at any point can
    still be written down with what was known.
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.run_dir = Path(str(cfg.paths.run_dir))
        self.choices = hydra_choices()
        self.started = time.time()
        self.started_at = now_iso()
        self.datamodule = None
        self.model = None
        self.trainer = None
        self.loggers: list = []
        self.history = None
        self.checkpoint = None
        self.resume_from: Path | None = None  # the checkpoint this run continues from
        self.wandb_id: str | None = None
        self._written = False  # the first write starts a fresh metrics.json (no stale evaluations)

    # ------------------------------------------------------------- build
    def build(self) -> None:
        """Instantiate all parts; every config error surfaces here, before any training."""
        import lightning as L

        from aelab.callbacks import StepSeeding, MetricsHistory
        from aelab.tracking import start_wandb

        cfg = self.cfg
        _quiet_known_warnings()
        threads = configure_threads(cfg)
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        # _convert_="all": plain lists and dicts reach the constructors (and the checkpoints)
        self.datamodule = instantiate(cfg.data, _convert_="all")
        noise = instantiate(cfg.noise, _convert_="all")
        self.model = instantiate(cfg.model, input_shape=list(self.datamodule.dims), noise=noise, _convert_="all")
        self.model.nonfinite_loss = str(cfg.get("nonfinite_loss", "stop"))
        if cfg.get("compile"):
            for name in ("encoder", "decoder"):  # in place: parameter names (and checkpoints) stay the same
                getattr(self.model, name).compile()
        self.resume_from = self.find_resume_checkpoint()
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        callbacks = instantiate_group(cfg.get("callbacks"))
        self.history = next((c for c in callbacks if isinstance(c, MetricsHistory)), None)
        if self.history is None:
            self.history = MetricsHistory()
            callbacks.append(self.history)
        if not any(isinstance(c, StepSeeding) for c in callbacks):
            callbacks.append(StepSeeding(int(cfg.seed)))  # resumed runs must draw the same random numbers
        # the checkpoint callback that keeps the best weights (the one with a monitored metric)
        self.checkpoint = next((c for c in callbacks if type(c).__name__ == "ModelCheckpoint" and c.monitor), None)
        wandb_extra: dict[str, Any] = {}
        if cfg.get("logger") and cfg.logger.get("wandb") is not None:
            if cfg.logger.wandb.get("group") is None:
                wandb_extra["group"] = sweep_name()
            if self.resume_from is not None:  # the same W&B run continues (WandbLogger resumes with resume="allow")
                self.wandb_id = wandb_run_id(self.run_dir)
                if self.wandb_id:
                    wandb_extra["id"] = self.wandb_id
        self.loggers = instantiate_group(cfg.get("logger"), **({"wandb": wandb_extra} if wandb_extra else {}))
        self.trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=self.loggers or False)
        if self.trainer.is_global_zero:
            params = loggable_config(cfg, self.choices)
            params["params"] = self.model.num_parameters()
            for logger in list(self.loggers):
                if type(logger).__name__.endswith("WandbLogger"):
                    if not start_wandb(logger, WANDB_SUMMARIES):
                        self.loggers.remove(logger)
                        self.trainer.loggers = self.loggers
                        continue
                    self.wandb_id = logger.experiment.id
                logger.log_hyperparams(params)
        log.info("run folder: %s%s", self.run_dir, f" (continuing from {self.resume_from.name})" if self.resume_from else "")
        log.info("data: %s", self.datamodule.describe())
        log.info(
            "model: %s, bottleneck %s, %s parameters, noise %s, %d CPU threads",
            self.choices.get("model", type(self.model).__name__), cfg.model.get("bottleneck"),
            f"{self.model.num_parameters():,}", noise.describe(), threads,
        )

    # --------------------------------------------------------------- run
    def run(self) -> dict:
        """Build, fit, test and write ``metrics.json``; returns its content."""
        self.build()
        if self.trainer.is_global_zero:
            self.write("running")
        ckpt_path = str(self.resume_from) if self.resume_from is not None else None
        self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        if self.trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        if self.cfg.get("test", True):
            which = self.cfg.get("test_ckpt", "best")
            if which not in ("best", "last"):
                raise ConfigError(f"test_ckpt={which!r} must be best or last")
            has_best = self.checkpoint is not None and bool(self.checkpoint.best_model_path)
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path="best" if which == "best" and has_best else None, verbose=False)
        self.after_test()
        summary = self.write("completed") if self.trainer.is_global_zero else {}
        self.finish_loggers(summary, exit_code=0)
        return summary

    def find_resume_checkpoint(self) -> Path | None:
        """``ckpt_path``, or with ``resume=auto`` the run folder's own newest checkpoint; checked readable."""
        from aelab.checkpoints import load_checkpoint, newest_resume_checkpoint

        ckpt_path = self.cfg.get("ckpt_path")
        if ckpt_path:
            path = Path(str(ckpt_path)).expanduser()
            if not path.is_file():
                raise ConfigError(f"ckpt_path={ckpt_path} does not exist; point it at a checkpoint such as <run>/checkpoints/last.ckpt")
            load_checkpoint(path, mmap=True)  # whole and readable? (Lightning reads it in fit)
            return path
        ckpt_dir = self.run_dir / "checkpoints"
        if str(self.cfg.get("resume", "auto")) == "never":
            if any(ckpt_dir.glob("*.ckpt")):
                raise ConfigError(f"{self.run_dir} already holds checkpoints and resume=never: delete the folder, "
                                  "choose another name=, or leave resume=auto to continue that run")
            return None
        path = newest_resume_checkpoint(ckpt_dir)
        if path is not None:
            load_checkpoint(path, mmap=True)  # a truncated file: a clear error naming it, before anything starts
        return path

    def after_test(self) -> None:
        """End-of-training evaluations (``eval.tasks``) on the tested weights, logged like the rest."""
        tasks = list(self.cfg.get("eval", {}).get("tasks") or [])
        if not tasks or not self.trainer.is_global_zero:
            return
        from aelab.evaluate import evaluate_run
        from aelab.runs import LoadedRun

        self.write("running")  # evaluate_run merges into metrics.json
        best = self.checkpoint.best_model_path if self.checkpoint is not None else ""
        run = LoadedRun(self.run_dir, self.cfg, self.model.eval(), self.datamodule, Path(best) if best else None)
        evaluate_run(run, tasks, self.cfg.eval, loggers=self.loggers, step=self.trainer.global_step)

    # ----------------------------------------------------------- summary
    def summary(self, status: str, error: str | None = None, error_type: str | None = None) -> dict:
        """What ``metrics.json`` holds for this run in state ``status``."""
        cfg = self.cfg
        history = self.history
        trainer = self.trainer
        best = history.best() if history else {}
        finished = time.time()
        data = {
            "status": status,
            "error": error,
            "error_type": error_type,
            "run_dir": str(self.run_dir),
            "model": self.choices.get("model"),
            "data": self.choices.get("data"),
            "noise": self.choices.get("noise"),
            "experiment": self.choices.get("experiment"),
            "bottleneck": cfg.model.get("bottleneck"),
            "params": self.model.num_parameters() if self.model is not None else None,
            "seed": cfg.get("seed"),
            "epochs": trainer.current_epoch if trainer is not None else 0,
            "global_step": trainer.global_step if trainer is not None else 0,
            "wall_time_s": round(finished - self.started, 3),
            "started_at": self.started_at,
            "finished_at": now_iso() if status != "running" else None,
            "finished_at_unix": finished if status != "running" else None,
            "final": dict(sorted((history.final if history else {}).items())),
            "best": best,
            "best_epoch": history.best_epoch(str(cfg.model.get("monitor", "val/recon_loss"))) if history else None,
            "checkpoints": {
                "best": self.checkpoint.best_model_path or None if self.checkpoint is not None else None,
                "last": str(self.run_dir / "checkpoints" / "last.ckpt") if (self.run_dir / "checkpoints" / "last.ckpt").is_file() else None,
            },
            "dataset": self.datamodule.describe() if self.datamodule is not None else None,
            "resumed_from": str(self.resume_from) if self.resume_from is not None else None,
            "wandb": {"id": self.wandb_id} if self.wandb_id else None,
            "world_size": trainer.world_size if trainer is not None else None,
            **(self.model.summary_extras() if self.model is not None else {}),
            "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        }
        metric = str(cfg.get("optimized_metric") or "val/recon_loss")
        data["objective"] = {"metric": metric, "value": best.get(metric, data["final"].get(metric))}
        return data

    def write(self, status: str, error: str | None = None, error_type: str | None = None) -> dict:
        """Write ``metrics.json`` atomically and return what was written."""
        data = self.summary(status, error, error_type)
        previous = (read_metrics(self.run_dir) or {}) if self._written else {}
        if data.get("wandb") is None and (previous.get("wandb") or {}).get("id"):
            data["wandb"] = previous["wandb"]
        if "eval" in previous:  # keep the evaluations this job added (eval.tasks)
            data["eval"] = previous["eval"]
            data["final"] = {**{k: v for k, v in previous.get("final", {}).items() if k.startswith("eval/")}, **data["final"]}
        write_json_atomic(self.run_dir / METRICS_FILE, data)
        self._written = True
        return data

    def record_failure(self, exc: BaseException, status: str) -> None:
        """Write ``status`` and the reason into ``metrics.json`` and the traceback into ``error.log``."""
        err = find_aelab_error(exc)
        message = str(err) if err is not None else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
            if self.trainer is None or self.trainer.is_global_zero:
                self.write(status, error=message, error_type=type(err or exc).__name__)
        except Exception as write_exc:  # never hide the original error
            log.warning("could not record the failure in %s: %s", self.run_dir, write_exc)
        self.finish_loggers({"status": status, "error": message}, exit_code=1)

    def finish_loggers(self, summary: dict, exit_code: int) -> None:
        """Flush every logger; finish the W&B run so the next job starts a new one."""
        from aelab.tracking import finish_wandb

        # best/* and eval/* go into the W&B summary; logged curves keep their own (define_metric) summaries
        flat = {f"best/{k}": v for k, v in (summary.get("best") or {}).items()}
        flat.update({k: v for k, v in (summary.get("final") or {}).items() if k.startswith("eval/")})
        for key in ("status", "error", "params", "bottleneck", "wall_time_s", "epochs"):
            if key in summary:
                flat[key] = summary[key]
        for logger in self.loggers:
            try:
                logger.save()
            except Exception:
                pass
        finish_wandb(self.loggers, flat, exit_code=exit_code)


def train(cfg: DictConfig) -> dict:
    """Train, test and summarise the run described by ``cfg``; returns ``metrics.json``'s content."""
    return TrainingJob(cfg).run()


def own_wandb_service() -> None:
    """Forget a W&B service inherited from a parent process (``WANDB_SERVICE``).

    W&B exports its service address to child processes. A training run that
    shares its parent's service and is killed leaves its run id registered
    there, so continuing the run (same id) would be refused as "in use".
    Each ``aelab-train`` process therefore starts its own service; only done
    while this process has not imported W&B itself.
    """
    if "wandb" not in sys.modules:
        os.environ.pop("WANDB_SERVICE", None)


def run_job(cfg: DictConfig) -> float | None:
    """The Hydra task: skip completed sweep jobs, record failures, return the objective."""
    own_wandb_service()
    multirun = is_multirun()
    run_dir = Path(str(cfg.paths.run_dir))
    previous = read_metrics(run_dir)
    if previous and previous.get("status") == "completed" and str(cfg.get("resume", "auto")) != "never" and not cfg.get("ckpt_path"):
        log.info("skipping %s: completed earlier (metrics.json says so; delete the folder to train it again)", run_dir.name)
        return (previous.get("objective") or {}).get("value")
    job = make_job(cfg)
    try:
        problems, _ = config_problems(cfg)
        if problems:
            raise ConfigError("; ".join(problems))
        launcher = str((HydraConfig.get().get("launcher") or {}).get("_target_", "")) if multirun else ""
        problem = local_ddp_sweep_problem(cfg.get("trainer"), launcher) if multirun else None
        if problem:
            raise ConfigError(problem)
        summary = job.run()
        return (summary.get("objective") or {}).get("value")
    except (KeyboardInterrupt, SystemExit) as exc:
        job.record_failure(exc, "interrupted")
        print(f"aelab-train: interrupted ({type(exc).__name__}); what was written is kept in {run_dir}; "
              "run the same command again to continue from checkpoints/last.ckpt", file=sys.stderr)
        if type(exc).__name__ == "SIGTERMException":
            raise SystemExit(128 + 15) from None  # Lightning's SIGTERM exit carries no status; report the signal
        raise
    except Exception as exc:
        job.record_failure(exc, "failed")
        err = find_aelab_error(exc)
        message = str(err) if err is not None else f"{type(exc).__name__}: {exc}"
        if multirun:
            log.error("job %s failed: %s (traceback in %s)", run_dir.name, message, run_dir / "error.log")
            return None
        if err is not None:
            raise SystemExit(f"aelab-train: error: {message}\n(run folder: {run_dir})") from None
        raise


def make_job(cfg: DictConfig) -> TrainingJob:
    """The job object for ``cfg`` (with end-of-training evaluations when ``cfg.eval`` asks)."""
    return TrainingJob(cfg)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Console entry point ``aelab-train``."""
    return run_job(cfg)


if __name__ == "__main__":
    main()
