"""The training step every aelab model runs: its objective, one optimizer step per batch, several batches a call.

A model declares what is particular to it — :meth:`TrainingStep.objective`, the loss of a batch and
the values to log — and this class does the rest, once, under Lightning's manual optimization:
the corruption, the finite-loss check, backward, gradient accumulation and clipping (the Trainer's
``accumulate_grad_batches``, ``gradient_clip_val``, ``gradient_clip_algorithm``: Lightning refuses them
with manual optimization, so the step adopts them), the optimizer step, learning-rate schedulers,
logging on the steps a logger or the progress bar shows, and the epoch means.

One call of :meth:`training_step` takes a chunk of ``steps_per_call`` batches (:mod:`aelab.data.chunks`)
and an optimizer step for each: what Lightning costs around a call is paid once per chunk. Batches,
order and steps are those of one batch a call; so are ``global_step``, ``log_every_n_steps``, the
schedulers' steps, and the step logger rows, which this class writes itself (Lightning would write one
row per call). Nothing in a chunk reads a value back to the host every step: the finite-loss check of
``nonfinite_loss=stop`` keeps a flag on the device and reads it once per chunk (before the chunk's last
optimizer step), the epoch means are sums on the device. ``nonfinite_loss=skip`` must decide before
each step whether to take it, so it reads the loss every step (as PyTorch's ``GradScaler`` does).

Lightning's ``manual_backward`` and ``LightningOptimizer.step`` dispatch three hooks a step (``on_before_backward``,
``on_after_backward``, ``on_before_optimizer_step``) over every callback, each under a profiler context: 0.33 ms a
step on a CPU, 2.5 % of a VAE's step. When nothing would run in them — one device, full precision, no profiler, no
callback and no model of the user's implementing those hooks — the step calls the model's ``backward`` hook, its
``on_before_optimizer_step`` (the gradient clipping) and the optimizer itself, and counts the step as Lightning does
(:meth:`TrainingStep.lightning_adds_nothing`); otherwise it goes through Lightning. The two are bit-identical.

Callbacks that must act before every batch (the per-step seeding of :class:`aelab.callbacks.StepSeeding`)
implement ``on_chunk_batch_start(trainer, pl_module, batch, batch_idx)``, called here before each batch
with its index in the epoch; Lightning's ``on_train_batch_start``/``_end`` run once per chunk.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy

from aelab.data.chunks import chunk_length, split_chunk
from aelab.errors import ConfigError, NonFiniteLossError

log = logging.getLogger(__name__)

#: the per-batch callback hook the step calls inside a chunk
BATCH_HOOK = "on_chunk_batch_start"

# The Trainer's accumulation and clipping as the user gave them (the Trainer's own are reset for Lightning's
# manual-optimization check; a Trainer that fits again hands the same values to the next model).
_ADOPTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# What an extension written before the step moved here overrides: refused at construction (a code path the
# training step ignored would change results silently).
_MOVED = {
    "training_step": "the base class owns the training step: define objective(x, x_in) returning (loss, values "
    "to log) instead",
    "forward": "the code path is one hook: override code(x), which training, forward, encode, reconstruct and "
    "every evaluation call",
    "encode": "the code path is one hook: override code(x), which training, forward, encode, reconstruct and "
    "every evaluation call",
}


#: the hooks Lightning's backward and optimizer step dispatch (see :meth:`TrainingStep.lightning_adds_nothing`)
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def _plateau(config) -> bool:
    return isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def skip_absent_nvml() -> None:
    """Drop Lightning's ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` where NVML cannot be loaded (no NVIDIA driver);
    called when training starts (:meth:`TrainingStep.on_train_start`), whoever built the Trainer.

    Lightning sets it on import so that asking whether CUDA is available does not initialise CUDA before a fork;
    torch then answers ``torch.cuda.is_available()`` by loading ``libnvidia-ml.so.1`` with ctypes on every call (not
    cached before CUDA starts). PyTorch's optimizers ask at every step (their CUDA-graph capture check): on a machine
    without the library each step pays a failed ``dlopen``, 0.07 ms, and torch then asks the CUDA runtime anyway
    (NVML's "-1" falls back to ``cudaGetDeviceCount``). Without NVML the variable changes no answer, only the cost;
    with NVML present it stays, and on ROCm (which counts devices with amdsmi, not NVML)."""
    import ctypes

    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or torch.version.hip:  # ROCm: asks amdsmi, not NVML
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def refuse_moved_overrides(cls: type, base: type) -> None:
    """Refuse a subclass of ``base`` that overrides what aelab's models no longer let it (see ``_MOVED``)."""
    for name, how in _MOVED.items():
        if getattr(cls, name, None) is not getattr(base, name, None):
            owner = next(k for k in cls.__mro__ if name in vars(k))
            raise ConfigError(
                f"{owner.__module__}.{owner.__qualname__} overrides {name}(), which aelab models no longer use "
                f"that way: {how} (docs/extending.md, recipe 1)"
            )


class TrainingStep(L.LightningModule):
    """The training step of every aelab model (see the module docstring); a model defines :meth:`objective`."""

    #: an aelab model takes a chunk of batches per call (the training loader checks before handing it chunks)
    trains_chunks = True
    #: what a NaN/inf training loss does: ``stop`` (raise) or ``skip`` (drop the batch); set by aelab-train
    nonfinite_loss: str = "stop"
    #: with ``skip``: stop anyway after this many non-finite batches in a row
    max_skipped_in_a_row: int = 100
    skipped_batches: int = 0
    _skipped_in_a_row: int = 0
    #: batches per Lightning call, for messages (set by aelab-train; the loader decides the chunks)
    steps_per_call: int = 1
    #: steps between the progress bar's updates (set by ProgressBar; None: no bar, log on the loggers' steps only)
    progress_every: int | None = None
    #: whether the current batch's values will be written or shown: an objective may leave out costly extras
    logging_step: bool = True
    #: the Trainer's settings the step applies itself (adopted in :meth:`configure_callbacks`)
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    #: whether the step skips Lightning's hook dispatch (:meth:`lightning_adds_nothing`, decided at the fit's start)
    _direct: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    # ------------------------------------------------------------ what a model declares
    def objective(self, x: torch.Tensor, x_in: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The training loss of clean images ``x`` given their corrupted version ``x_in`` (the model's input),
        and the named values to log (``recon_loss`` → ``train/recon_loss``); the loss is one of them or not."""
        raise NotImplementedError(f"{type(self).__name__} must define objective(x, x_in)")

    #: the metric that names the model's objective: the progress bar shows it (``train/<key>``, ``val/<key>``),
    #: tables name it, and its training epoch mean is logged (``train/<key>_epoch``)
    objective_key = "recon_loss"

    # ------------------------------------------------------------ the Trainer's settings
    def configure_callbacks(self):
        """Adopt the Trainer's gradient accumulation and clipping: Lightning refuses them with manual
        optimization (checked right after this hook), and this step applies them as Lightning would."""
        trainer = self._trainer
        if trainer is not None:
            given = _ADOPTED.setdefault(
                trainer, (trainer.accumulate_grad_batches, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
            )
            self.accumulate_grad_batches, self.gradient_clip_val, self.gradient_clip_algorithm = given
            trainer.accumulate_grad_batches, trainer.gradient_clip_val = 1, None
        return super().configure_callbacks()

    def on_before_optimizer_step(self, optimizer) -> None:
        """Clip the gradients (after the mixed-precision unscaling, before the step), as Lightning does."""
        if self.gradient_clip_val:
            self.configure_gradient_clipping(
                optimizer,
                gradient_clip_val=self.gradient_clip_val,
                gradient_clip_algorithm=self.gradient_clip_algorithm,
            )

    def lightning_adds_nothing(self) -> bool:
        """Whether Lightning's ``manual_backward`` and optimizer step would run nothing but ``backward``, the
        clipping and the optimizer: one device (no gradient sync), full precision (no scaling or autocast), no
        profiler, and no callback or model implementing :data:`STEP_HOOKS` beyond this class's clipping."""
        trainer = self.trainer
        if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
            return False
        if not isinstance(trainer.profiler, PassThroughProfiler):
            return False
        for hook in STEP_HOOKS:
            if any(getattr(type(c), hook) is not getattr(L.Callback, hook) for c in trainer.callbacks):
                return False
        own = {"on_before_optimizer_step": TrainingStep.on_before_optimizer_step}
        return all(getattr(type(self), hook) is own.get(hook, getattr(L.LightningModule, hook)) for hook in STEP_HOOKS)

    def _backward(self, loss: torch.Tensor) -> None:
        if self._direct:
            self.backward(loss)
        else:
            self.manual_backward(loss)

    def _optimizer_step(self, optimizer) -> None:
        """``optimizer.step()`` as Lightning runs it: its step count, this model's clipping hook, the step."""
        if self._direct:
            optimizer._on_before_step()  # noqa: SLF001 — Lightning's step count (set by its manual loop)
            self.on_before_optimizer_step(optimizer.optimizer)
            optimizer.optimizer.step()
            optimizer._on_after_step()  # noqa: SLF001
        else:
            optimizer.step()

    def on_train_start(self) -> None:
        skip_absent_nvml()
        self._direct = self.lightning_adds_nothing()
        callbacks = self.trainer.callbacks
        self._batch_hooks = [getattr(c, BATCH_HOOK) for c in callbacks if callable(getattr(c, BATCH_HOOK, None))]
        if self.steps_per_call > 1:
            for c in callbacks:
                per_batch = [
                    name
                    for name in ("on_train_batch_start", "on_train_batch_end")
                    if getattr(type(c), name) is not getattr(L.Callback, name)
                ]
                if per_batch and type(c).__module__.split(".")[0] not in ("aelab", "lightning", "pytorch_lightning"):
                    log.warning(
                        "callback %s: its %s run once per call of up to %d batches (steps_per_call=%d); "
                        "per-batch work belongs in %s(trainer, pl_module, batch, batch_idx), or set steps_per_call=1",
                        type(c).__name__,
                        " and ".join(per_batch),
                        self.steps_per_call,
                        self.steps_per_call,
                        BATCH_HOOK,
                    )
                every = getattr(c, "_every_n_train_steps", 0)
                if every and every % self.steps_per_call:
                    log.warning(
                        "%s(every_n_train_steps=%d) sees the step count once per call of %d steps "
                        "(steps_per_call=%d): it saves only when a call ends on a multiple of %d",
                        type(c).__name__,
                        every,
                        self.steps_per_call,
                        self.steps_per_call,
                        every,
                    )
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "step" and _plateau(config):
                raise ConfigError(
                    "a ReduceLROnPlateau scheduler stepped every step (interval 'step') is not supported by aelab's "
                    "training step: step it every epoch (interval 'epoch')"
                )

    # ------------------------------------------------------------ the step
    def training_step(self, batch: dict, batch_idx: int) -> None:
        trainer = self.trainer
        optimizer = self.optimizers()
        accumulate = max(1, int(self.accumulate_grad_batches))
        stop_mode = self.nonfinite_loss != "skip"
        max_steps = trainer.max_steps
        hooks = self.__dict__.get("_batch_hooks", ())
        flags: list[tuple[torch.Tensor, int]] = []  # per batch: its loss (on the device) and its step
        steps, group, shown, checked, skipped = 0, 0, None, False, self.skipped_batches
        count = chunk_length(batch)
        is_last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        for i, (part, index, last) in enumerate(split_chunk(batch, batch_idx, is_last)):
            if max_steps != -1 and self.global_step >= max_steps:
                break  # the rest of this chunk would pass max_steps
            for hook in hooks:
                hook(trainer, self, part, index)
            stepping = (index + 1) % accumulate == 0 or last
            group += 1
            step = self.global_step
            logger_due = (step + 1) % max(1, trainer.log_every_n_steps) == 0
            bar_due = (
                bool(self.progress_every)
                and (index + 1) // self.progress_every != (index + 1 - group) // self.progress_every
            )
            self.logging_step = stepping and (logger_due or bar_due)
            x = part["image"]
            x_in = self.noise(x)
            loss, values = self.objective(x, x_in)
            if stop_mode:
                flags.append((loss.detach(), step))
            elif not self._finite_now(loss, step):  # skip mode: no backward, no step for this batch
                if stepping:
                    optimizer.zero_grad()
                    group = 0
                continue
            if stepping:
                self._backward(loss / accumulate if accumulate > 1 else loss)
                if stop_mode and i == count - 1:  # before the chunk's last step: one read of the flags
                    self._check_flags(flags)
                    checked = True
                self._optimizer_step(optimizer)
                optimizer.zero_grad()
                steps += 1
                group = 0
                self._step_schedulers("step", index)
                if last:
                    self._step_schedulers("epoch", index)
                    self._epoch_done = True
            else:
                with optimizer.toggle_model(sync_grad=False):  # DDP: no gradient all-reduce while accumulating
                    self._backward(loss / accumulate)
            n = x.shape[0]
            key = f"train/{self.objective_key}"
            named = {f"train/{k}": v for k, v in values.items()}
            if self.skipped_batches:
                named["train/skipped_batches"] = float(self.skipped_batches)
            self.accumulate_epoch({f"{key}_epoch": named.get(key, loss)}, n)
            if self.logging_step:
                if logger_due:
                    self._write_step(named, step)
                shown = (named if logger_due else {key: named[key]} if key in named else {}), n
        if stop_mode and flags and not checked:
            self._check_flags(flags)
        if self.skipped_batches != skipped:
            self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False, logger=False)
        if shown is not None:  # the last shown values: the progress bar and the trainer's callback_metrics
            values, n = shown
            for k, v in values.items():
                self.log(k, v, on_step=True, on_epoch=False, logger=False, prog_bar=k == key, batch_size=n)
        # Lightning counts one batch that stepped per call; count the steps taken (its logger step for the
        # epoch-level rows, saved in checkpoints)
        trainer.fit_loop.epoch_loop._batches_that_stepped += steps - 1  # noqa: SLF001 — Lightning's logger step
        return None

    def _write_step(self, values: dict[str, Any], step: int) -> None:
        """Write one step's values to the loggers at ``step`` (Lightning's step numbering: optimizer steps
        before this one), with the epoch, as Lightning writes ``on_step`` values."""
        loggers = self.trainer.loggers
        if not loggers:
            return
        row = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}
        row["epoch"] = self.current_epoch
        for logger in loggers:
            logger.log_metrics(row, step=step)
            logger.save()

    # ------------------------------------------------------------ schedulers
    def _step_schedulers(self, interval: str, index: int) -> None:
        """Step the schedulers of ``interval`` as Lightning's automatic optimization would: a ``step`` one after
        every optimizer step (``frequency`` counted in batches of the epoch), an ``epoch`` one after the epoch's
        last optimizer step; ReduceLROnPlateau at the end of the epoch (:meth:`on_train_epoch_end`)."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or _plateau(config):
                continue
            count = index + 1 if interval == "step" else self.current_epoch + 1
            if count % config.frequency == 0:
                self.lr_scheduler_step(config.scheduler, None)

    #: the metric a ReduceLROnPlateau scheduler monitors (Lightning drops a scheduler's ``monitor`` key under
    #: manual optimization; aelab's models set this from ``model.monitor``)
    scheduler_monitor: str = "val/recon_loss"

    def _step_plateau_schedulers(self) -> None:
        """ReduceLROnPlateau every ``frequency`` epochs, on the monitored value (validation ran before this)."""
        trainer = self.trainer
        for config in trainer.lr_scheduler_configs:
            if not _plateau(config) or config.interval != "epoch" or (self.current_epoch + 1) % config.frequency:
                continue
            value = trainer.callback_metrics.get(self.scheduler_monitor)
            if value is None:
                raise ConfigError(
                    f"the ReduceLROnPlateau scheduler monitors {self.scheduler_monitor} (model.monitor), which was "
                    f"not logged by the end of epoch {self.current_epoch}: validate every epoch "
                    "(trainer.check_val_every_n_epoch=1) or monitor a metric that is logged"
                )
            self.lr_scheduler_step(config.scheduler, value)

    # ------------------------------------------------------------ finite losses
    def _check_flags(self, flags: list[tuple[torch.Tensor, int]]) -> None:
        """``nonfinite_loss=stop``: one read of whether the chunk's losses were finite (agreed across DDP ranks)."""
        losses = torch.stack([loss.float().reshape(()) for loss, _ in flags])
        ok = bool(torch.isfinite(losses).all())
        if self.trainer.world_size > 1:
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:  # the first non-finite batch (when it was another rank's: this chunk's first)
            bad = [(step, value) for (_, step), value in zip(flags, losses.tolist()) if not math.isfinite(value)]
            self._raise_nonfinite(*(bad[0] if bad else (flags[0][1], math.nan)))

    def _finite_now(self, loss: torch.Tensor, step: int) -> bool:
        """``nonfinite_loss=skip``: whether this batch's loss is finite (agreed across DDP ranks); counts skips and
        stops after ``max_skipped_in_a_row`` in a row."""
        finite = bool(torch.isfinite(loss.detach()).all())
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self._skipped_in_a_row = 0
            return True
        self._skipped_in_a_row += 1
        self.skipped_batches += 1
        if self._skipped_in_a_row >= self.max_skipped_in_a_row:
            self._raise_nonfinite(step, float(loss.detach().float().reshape(-1)[0]))
        return False

    def _raise_nonfinite(self, step: int, value: float = math.nan) -> None:
        trainer = self.trainer
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        finite_weights = all(bool(torch.isfinite(p).all()) for p in self.parameters())
        kept = (
            "The weights from before this step are saved as checkpoints/last.ckpt."
            if finite_weights
            else f"The later steps of the same call (steps_per_call={self.steps_per_call}, checked once per call) made "
            "the weights non-finite: they are not saved, and checkpoints/last.ckpt, if an epoch ended before, keeps "
            "the last finite ones (steps_per_call=1 saves those of just before the step)."
        )
        raise NonFiniteLossError(
            f"the training loss became {value} at epoch {self.current_epoch}, step {step} (learning rate {lr:g}). "
            f"{kept} "
            "Try a lower model.optimizer.lr or gradient clipping (trainer.gradient_clip_val=1.0)"
            + (
                f"; {self._skipped_in_a_row} batches in a row were skipped (nonfinite_loss=skip)."
                if self.nonfinite_loss == "skip"
                else ", or nonfinite_loss=skip to drop such batches."
            )
        )

    # ------------------------------------------------------------ epoch means
    def accumulate_epoch(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """Add training values to the epoch's running sums (on the device; logged once, at the end of the epoch,
        synced across ranks)."""
        sums = self.__dict__.setdefault("_epoch_sums", {})
        for key, value in values.items():
            total, count = sums.get(key, (0.0, 0))
            sums[key] = (total + value.detach().double() * batch_size, count + batch_size)

    def on_train_epoch_start(self) -> None:
        self._epoch_done = False

    def on_train_epoch_end(self) -> None:
        for key, (total, count) in self.__dict__.pop("_epoch_sums", {}).items():
            stats = torch.stack(
                [
                    torch.as_tensor(total, dtype=torch.float64, device=self.device),
                    torch.tensor(float(count), dtype=torch.float64, device=self.device),
                ]
            )
            if self.trainer.world_size > 1:
                stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
            self.log(key, (stats[0] / stats[1]).float(), on_step=False, on_epoch=True)
        if self.__dict__.pop("_epoch_done", False):
            self._step_plateau_schedulers()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A mid-epoch checkpoint keeps the epoch's running sums: the resumed epoch's means cover all its batches."""
        sums = self.__dict__.get("_epoch_sums")
        loader = getattr(self._trainer, "train_dataloader", None) if self._trainer is not None else None
        sampler = getattr(loader, "sampler", None)
        mid_epoch = sampler is not None and hasattr(sampler, "yielded") and 0 < sampler.yielded < sampler.num_batches()
        if sums and mid_epoch:  # (an end-of-epoch checkpoint resumes with a fresh epoch)
            checkpoint["aelab_epoch_sums"] = {k: (float(t), int(c)) for k, (t, c) in sums.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sums = checkpoint.get("aelab_epoch_sums")
        if sums:
            self.__dict__["_epoch_sums"] = {k: (torch.tensor(t, dtype=torch.float64), c) for k, (t, c) in sums.items()}
