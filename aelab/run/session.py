"""The training process around one job: Hydra's context, CPU threads, log routing, W&B's service.

Entry-point support for ``aelab-train`` (it knows Hydra); the job itself is in :mod:`aelab.train`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aelab.config.checks import world_size

log = logging.getLogger(__name__)


def hydra_choices() -> dict[str, str]:
    """The chosen option of each config group (``model``: ``conv``, ...), when Hydra runs."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if v is not None and not k.startswith("hydra")}


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def task_overrides() -> list[str]:
    """The running job's task overrides, as typed (``${...}`` unresolved)."""
    if not HydraConfig.initialized():
        return []
    return [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)]


def search_path() -> list[str]:
    """The running job's Hydra search path (``hydra.searchpath``: the config packages of extensions)."""
    if not HydraConfig.initialized():
        return []
    return [str(p) for p in HydraConfig.get().get("searchpath") or []]


def sweep_name() -> str | None:
    """The sweep folder's name for a multirun job (the W&B group)."""
    return Path(str(HydraConfig.get().sweep.dir)).name if is_multirun() else None


def loggable_config(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """The run's config as a plain dict for loggers, with the most-swept knobs at the top level."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    plain.pop("hydra", None)
    plain["bottleneck"] = cfg.model.get("bottleneck")  # top level: dashboards plot against it directly
    plain["overrides"] = task_overrides()
    for group in ("model", "data", "noise", "trainer", "experiment"):
        if group in choices:
            plain[f"{group}_name"] = choices[group]
    return plain


def plan_threads(cfg: DictConfig) -> Any:
    """Choose this job's CPU threads (:mod:`aelab.run.threads`) before torch loads: ``cfg.threads``, else the usable
    cores shared by this job's processes (DDP ranks on the CPU, joblib workers) and the other aelab jobs running.
    A count that cannot follow the machine (given, or fixed for determinism) bounds OpenMP's spin — only while
    torch is not loaded, so the pre-run step calls this before any of its checks that import torch; the plan."""
    from aelab.run import threads as cpu

    trainer_cfg = cfg.get("trainer") or {}
    processes = 1
    if str(trainer_cfg.get("accelerator")) == "cpu":
        processes = world_size(trainer_cfg) // max(1, int(trainer_cfg.get("num_nodes", 1) or 1))
    if HydraConfig.initialized():
        launcher = HydraConfig.get().get("launcher") or {}
        if "joblib" in str(launcher.get("_target_", "")):
            n_jobs = int(launcher.get("n_jobs") or 1)
            processes = max(processes, cpu.usable_cores() if n_jobs < 1 else n_jobs)
    cpu.current = cpu.choose(cfg.get("threads"), processes, bool(trainer_cfg.get("deterministic")))
    if not cpu.current.adapts:
        cpu.bound_spin()
    return cpu.current


def configure_threads(cfg: DictConfig) -> int:
    """Join the jobs sharing the machine and set torch's threads by the plan :func:`plan_threads` made (made here
    when none was); the count."""
    from aelab.run import threads as cpu

    plan = cpu.current if cpu.current is not None else plan_threads(cfg)
    return plan.apply(cpu.join())


def quiet_known_warnings() -> None:
    """Silence warnings that do not apply to aelab's in-memory data path; route Lightning's log through Hydra's."""
    for message in (
        ".*does not have many workers.*",
        ".*is smaller than the logging interval.*",
        ".*The number of training batches.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*configured with multiple `ModelCheckpoint` callbacks.*",
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(getattr(f, "aelab", False) for f in rank_zero.filters):
        drop = logging.Filter()
        drop.filter = lambda record: "Tip:" not in str(record.getMessage())  # Lightning's product tips
        drop.aelab = True
        rank_zero.addFilter(drop)


def own_wandb_service() -> None:
    """Forget a W&B service inherited from a parent process (``WANDB_SERVICE``): a killed run sharing its
    parent's service would keep its run id "in use" and block its resume. Each ``aelab-train`` process
    starts its own (only while this process has not imported W&B itself)."""
    if "wandb" not in sys.modules:
        os.environ.pop("WANDB_SERVICE", None)


def process_started_at() -> float:
    """When this process started (``time.time()`` scale): from ``/proc`` on Linux, else when aelab was imported."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + start / ticks
    except (OSError, ValueError, StopIteration, IndexError):
        import aelab

        return aelab.IMPORTED_AT


def fast_exit() -> None:
    """Let the process end quickly: move every object into the garbage collector's permanent generation.

    With torch and Lightning loaded, the interpreter's final collections take about a second
    (measured: 1.25 s after ``import lightning`` against 0.21 s with the objects frozen). Nothing is
    skipped: destructors and ``atexit`` handlers still run. Called by the entry points when their
    work is done (a sweep's jobs return to Hydra before it, so it freezes what they left).
    """
    import gc

    gc.freeze()


def watch_launcher() -> None:
    """In a worker process of a parallel (joblib) sweep, stop the job when the launcher dies
    (:func:`stop_with_parent`)."""
    if is_multirun() and "joblib" in str((HydraConfig.get().get("launcher") or {}).get("_target_", "")):
        stop_with_parent()


_watching_parent = False
job_running = __import__("threading").Event()  # set while a sweep job trains in this worker process


def stop_with_parent(interval: float = 1.0) -> None:
    """In a worker process of a parallel sweep (joblib/loky): SIGTERM this process when the launcher dies.

    A ``kill -9`` of the launcher leaves its workers re-parented and training; a later
    ``sweep.resume=true`` would then train the same jobs beside them. Within ``interval``
    seconds of the launcher's death the job gets SIGTERM, which Lightning turns into a
    clean stop: ``last.ckpt`` is saved and the record says ``interrupted``; then the worker exits.
    """
    global _watching_parent
    if _watching_parent:
        return
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        if job_running.is_set():
            log.warning("the sweep's launcher (process %d) is gone: stopping this job", parent)
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.time() + 120  # time to save last.ckpt and record "interrupted"
            while job_running.is_set() and time.time() < deadline:
                time.sleep(0.2)
        os._exit(128 + signal.SIGTERM)  # no launcher to return to: the worker ends too

    threading.Thread(target=watch, name="aelab-parent-watch", daemon=True).start()
    _watching_parent = True


class CtrlC:
    """During ``trainer.fit``: a first Ctrl-C (SIGINT) stops training at the next step boundary, as SIGTERM does
    (Lightning's stop between two training calls: ``last.ckpt`` saved, the run recorded ``interrupted``, resumed
    exactly by the same command); a second Ctrl-C stops at once. ``presses`` counts them (exit code 130 if any)."""

    def __init__(self, trainer):
        self.trainer, self.presses, self._previous = trainer, 0, None

    def __enter__(self) -> CtrlC:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        import signal

        self.presses += 1
        lightning_stops = type(signal.getsignal(signal.SIGTERM)).__name__ == "_HandlersCompose"  # fit is running
        if self.presses > 1 or not lightning_stops:
            raise KeyboardInterrupt
        print(
            "\naelab-train: Ctrl-C: stopping after this step and saving checkpoints/last.ckpt "
            "(Ctrl-C again stops at once, without saving)",
            file=sys.stderr,
            flush=True,
        )
        self.trainer._signal_connector.received_sigterm = True  # noqa: SLF001 — Lightning's SIGTERM stop
