"""Checks of a composed config before anything is built: schemas, ranges, writable outputs.

Everything here is plain Python and OmegaConf (no torch), so ``aelab-train``
refuses a bad config in about a second, before it creates a run folder.

* **Schemas** — dataclasses for the ``data``, ``noise``, ``trainer`` groups
  and the model keys every variant shares. A misspelt key or a wrong type
  is reported with the key and the accepted keys or type.
* **Ranges** — negative σ, probabilities outside [0, 1], a bottleneck ≤ 0,
  unknown choices, ... are reported with the accepted values; a bottleneck
  that does not compress is a warning.
* **Outputs** — the output folder must be writable and its disk must have
  ``paths.min_free_mb`` free.

:func:`config_problems` returns every problem at once; the entry points
print them and exit.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

log = logging.getLogger("aelab.config")

DATASET_INPUT_SIZES = {"fashion_mnist": 28 * 28, "mnist": 28 * 28, "cifar10": 3 * 32 * 32}
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64", "transformer-engine")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
RESUME_MODES = ("auto", "never")
NONFINITE_POLICIES = ("stop", "skip")


# ----------------------------------------------------------------------------- schemas
@dataclass
class DataSchema:
    """``data`` group: aelab.data.ImageDataModule's arguments."""

    _target_: str = "aelab.data.ImageDataModule"
    dataset: str = "fashion_mnist"
    root: Optional[str] = None
    download: bool = True
    batch_size: int = 256
    eval_batch_size: Optional[int] = None
    val_size: int = 5000
    seed: int = 0
    limit_train: Optional[int] = None
    limit_val: Optional[int] = None
    limit_test: Optional[int] = None
    normal_class: Optional[int] = None
    binarize: str = "none"
    shuffle: bool = True
    drop_last: bool = False
    image_size: Any = None
    channels: Optional[int] = None
    num_train: Optional[int] = None
    num_test: Optional[int] = None
    sprites_seed: int = 0
    device: str = "auto"


@dataclass
class NoiseSchema:
    """``noise`` group: one corruption (only the keys of the chosen one are present)."""

    _target_: str = "aelab.data.noise.NoCorruption"
    sigma: Optional[float] = None
    clip: Optional[bool] = None
    p: Optional[float] = None
    salt_fraction: Optional[float] = None


@dataclass
class ModelCommonSchema:
    """The ``model`` keys that every variant shares (variant-specific keys are checked by Hydra's struct mode)."""

    _target_: str = "aelab.models.Autoencoder"
    bottleneck: int = 32
    monitor: str = "val/recon_loss"
    monitor_mode: str = "min"
    eval_seed: int = 12345


@dataclass
class TrainerSchema:
    """``trainer`` group: the Lightning Trainer arguments aelab's configs set."""

    _target_: str = "lightning.pytorch.Trainer"
    default_root_dir: Optional[str] = None
    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    sync_batchnorm: bool = False
    precision: Any = "32-true"
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 1
    gradient_clip_val: Optional[float] = None
    deterministic: Any = False
    benchmark: bool = False
    enable_model_summary: bool = True
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    use_distributed_sampler: bool = False
    overfit_batches: Any = 0.0
    fast_dev_run: Any = False
    accumulate_grad_batches: int = 1
    val_check_interval: Any = None
    detect_anomaly: bool = False
    plugins: Any = None


@dataclass
class TopSchema:
    """The top-level keys of ``config.yaml`` that are checked by type."""

    seed: int = 0
    test: bool = True
    test_ckpt: str = "best"
    threads: Optional[int] = None
    compile: bool = False
    resume: str = "auto"
    name: Optional[str] = None
    nonfinite_loss: str = "stop"
    tags: list = field(default_factory=list)


def _node(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _schema_problems(group: str, node: Any, schema: type, only_known: bool = False) -> list[str]:
    """Merge ``node`` into ``schema``; one message per unknown key or wrong type."""
    if node is None:
        return []
    if not isinstance(node, DictConfig):
        return [f"{group} must be a mapping of options (got {node!r})"]
    known = [f.name for f in fields(schema)]
    problems = []
    for key in list(node.keys()):
        key = str(key)
        if key not in known:
            if only_known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {group}.{close[0]}?" if close else ""
            problems.append(f"{group}.{key} is not an option of {group}{hint} The options are: {', '.join(k for k in known if k != '_target_')}")
            continue
        try:
            value = OmegaConf.select(node, key, throw_on_missing=False)
        except OmegaConfBaseException:  # an interpolation resolved later (e.g. ${hydra:runtime.output_dir})
            continue
        try:
            OmegaConf.merge(OmegaConf.structured(schema), {key: value})
        except (ValidationError, ConfigKeyError) as exc:
            expected = next(f.type for f in fields(schema) if f.name == key)
            expected = getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
            problems.append(f"{group}.{key}={value!r} has the wrong type: expected {expected} ({str(exc).splitlines()[0]})")
    return problems


# ------------------------------------------------------------------------------ ranges
def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _data_problems(data: DictConfig) -> list[str]:
    problems = []
    datasets = sorted(DATASET_INPUT_SIZES) + ["sprites"]
    if data.get("dataset") not in datasets:
        problems.append(f"unknown dataset data.dataset={data.get('dataset')!r}; choose one of {datasets}")
    for key in ("batch_size", "val_size"):
        if key in data and not _positive_int(data.get(key)):
            problems.append(f"data.{key} must be a positive integer (got {data.get(key)!r})")
    for key in ("eval_batch_size", "limit_train", "limit_val", "limit_test", "num_train", "num_test"):
        value = data.get(key)
        if value is not None and not _positive_int(value):
            problems.append(f"data.{key} must be a positive integer or null (got {value!r})")
    if data.get("binarize", "none") not in ("none", "dynamic", "fixed"):
        problems.append(f"data.binarize={data.get('binarize')!r} is not one of ['none', 'dynamic', 'fixed']")
    if data.get("device", "auto") not in ("auto", "cpu"):
        problems.append(f"data.device={data.get('device')!r} is not one of ['auto', 'cpu']")
    normal = data.get("normal_class")
    if normal is not None and (not isinstance(normal, int) or normal < 0):
        problems.append(f"data.normal_class must be a class index >= 0 or null (got {normal!r})")
    channels = data.get("channels")
    if channels is not None and channels not in (1, 3):
        problems.append(f"data.channels must be 1 or 3 (got {channels!r})")
    return problems


def _noise_problems(noise: DictConfig) -> list[str]:
    problems = []
    sigma = noise.get("sigma")
    if sigma is not None and not sigma >= 0:
        problems.append(f"noise.sigma is a standard deviation and must be >= 0 (got {sigma})")
    for key in ("p", "salt_fraction"):
        value = noise.get(key)
        if value is not None and not 0 <= value <= 1:
            problems.append(f"noise.{key} is a probability and must lie in [0, 1] (got {value})")
    return problems


def input_size(data: DictConfig) -> int | None:
    """Values per image of the configured dataset (``None`` when it cannot be told)."""
    if data.get("dataset") == "sprites":
        size = data.get("image_size") or 28
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return int(h) * int(w) * int(data.get("channels") or 1)
    return DATASET_INPUT_SIZES.get(str(data.get("dataset")))


def _model_problems(model: DictConfig, data: DictConfig | None, noise: DictConfig | None) -> tuple[list[str], list[str]]:
    problems, warnings = [], []
    bottleneck = model.get("bottleneck")
    if not _positive_int(bottleneck):
        problems.append(f"model.bottleneck is the size of the code and must be a positive integer (got {bottleneck!r})")
    elif data is not None:
        size = input_size(data)
        regularised = model.get("sparse") or model.get("contractive") or (
            noise is not None and "NoCorruption" not in str(noise.get("_target_", "NoCorruption")))
        if size is not None and bottleneck >= size and not regularised:
            warnings.append(
                f"model.bottleneck={bottleneck} is not smaller than the input ({size} values per image): "
                "without a sparsity/contractive penalty or a corruption the autoencoder can learn the identity"
            )
    if model.get("monitor_mode", "min") not in ("min", "max"):
        problems.append(f"model.monitor_mode={model.get('monitor_mode')!r} is not one of ['min', 'max']")
    for key, choices in (("loss", ("mse", "bce")), ("likelihood", ("bernoulli", "gaussian")),
                         ("output_activation", ("sigmoid", "identity"))):
        if key in model and model.get(key) not in choices:
            problems.append(f"model.{key}={model.get(key)!r} is not one of {list(choices)}")
    decoder = model.get("decoder") or {}
    encoder = model.get("encoder") or {}
    if "upsample" in decoder and decoder.get("upsample") not in ("transpose", "nearest", "bilinear", "unpool"):
        problems.append(f"model.decoder.upsample={decoder.get('upsample')!r} is not one of ['transpose', 'nearest', 'bilinear', 'unpool']")
    if "downsample" in encoder and encoder.get("downsample") not in ("stride", "pool"):
        problems.append(f"model.encoder.downsample={encoder.get('downsample')!r} is not one of ['stride', 'pool']")
    for key in ("beta", "free_bits", "kl_warmup_steps"):
        value = model.get(key)
        if value is not None and not value >= 0:
            problems.append(f"model.{key} must be >= 0 (got {value})")
    lr = OmegaConf.select(model, "optimizer.lr", default=None)
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
        problems.append(f"model.optimizer.lr must be a positive number (got {lr!r})")
    return problems, warnings


def _trainer_problems(trainer: DictConfig) -> list[str]:
    problems = []
    precision = str(trainer.get("precision", "32-true"))
    if precision not in PRECISIONS:
        problems.append(f"trainer.precision={precision!r} is not one of {list(PRECISIONS[:6])}")
    if str(trainer.get("accelerator", "auto")) not in ACCELERATORS:
        problems.append(f"trainer.accelerator={trainer.get('accelerator')!r} is not one of {list(ACCELERATORS[:5])}")
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and not (isinstance(max_epochs, int) and (max_epochs >= 1 or max_epochs == -1)):
        problems.append(f"trainer.max_epochs must be a positive integer, or -1 for no limit (got {max_epochs!r})")
    return problems


def _top_problems(cfg: DictConfig) -> list[str]:
    problems = []
    resume = cfg.get("resume", "auto")
    if resume not in RESUME_MODES and not (isinstance(resume, str) and Path(resume).expanduser().is_dir()):
        problems.append(f"resume={resume!r} must be auto, never, or an existing run folder to continue")
    if cfg.get("nonfinite_loss", "stop") not in NONFINITE_POLICIES:
        problems.append(f"nonfinite_loss={cfg.get('nonfinite_loss')!r} is not one of {list(NONFINITE_POLICIES)}")
    if cfg.get("test_ckpt", "best") not in ("best", "last"):
        problems.append(f"test_ckpt={cfg.get('test_ckpt')!r} must be best or last")
    name = cfg.get("name")
    if name is not None and (not str(name) or "/" in str(name) or str(name) in (".", "..")):
        problems.append(f"name={name!r} must be a plain folder name (no '/')")
    return problems


def config_problems(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """Every problem of the composed ``cfg`` (errors) and the warnings, without building anything."""
    problems: list[str] = []
    problems += _schema_problems("config", cfg, TopSchema, only_known=True)
    data, noise, model, trainer = (_node(cfg, k) for k in ("data", "noise", "model", "trainer"))
    problems += _schema_problems("data", data, DataSchema)
    problems += _schema_problems("noise", noise, NoiseSchema)
    problems += _schema_problems("model", model, ModelCommonSchema, only_known=True)
    problems += _schema_problems("trainer", trainer, TrainerSchema)
    warnings: list[str] = []
    if problems:  # the range checks below assume the right types
        return problems, warnings
    problems += _top_problems(cfg)
    if isinstance(data, DictConfig):
        problems += _data_problems(data)
    if isinstance(noise, DictConfig):
        problems += _noise_problems(noise)
    if isinstance(model, DictConfig):
        more, warnings = _model_problems(model, data if isinstance(data, DictConfig) else None,
                                         noise if isinstance(noise, DictConfig) else None)
        problems += more
    if isinstance(trainer, DictConfig):
        problems += _trainer_problems(trainer)
    return problems, warnings


def world_size(trainer: DictConfig | dict | None) -> int:
    """Processes the trainer config asks for (devices × nodes; 1 when it cannot be told)."""
    if not trainer:
        return 1
    devices = trainer.get("devices", 1)
    if isinstance(devices, int):
        n = devices
    elif isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        n = len(devices)
    else:
        n = 1  # "auto" or a string: leave it to Lightning
    return max(1, n) * max(1, int(trainer.get("num_nodes", 1) or 1))


def local_ddp_sweep_problem(trainer: DictConfig | dict | None, launcher_target: str) -> str | None:
    """Why a multirun job with this trainer cannot run under this Hydra launcher, or None.

    Lightning starts DDP ranks by re-running the command line, ``-m`` included,
    so only a launcher that starts the ranks itself (SLURM) can host DDP jobs.
    """
    n = world_size(trainer)
    if n <= 1 or "SlurmLauncher" in launcher_target:
        return None
    name = (launcher_target.rsplit(".", 1)[-1].replace("Launcher", "").lower() or "basic") if launcher_target else "basic"
    return (
        f"a multirun (-m) with the {name} launcher cannot run DDP jobs (trainer.devices x num_nodes = {n}): "
        "Lightning starts the extra DDP processes by re-running the command line, which would re-launch the whole sweep. "
        "Instead: run each configuration as its own `aelab-train trainer=ddp ...` command; or sweep one process per job "
        "(trainer=gpu / trainer=cpu, e.g. with hydra/launcher=joblib); or use hydra/launcher=submitit_slurm with "
        f"hydra.launcher.tasks_per_node={n} (SLURM starts the DDP processes)."
    )


def output_problems(folder: str | Path, min_free_mb: float = 0) -> list[str]:
    """Whether run folders can be created under ``folder`` (writable, ``min_free_mb`` free)."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"the output folder {folder} cannot be created: {existing} is not a folder. Set paths.output_dir to a writable folder"]
    probe = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".aelab-write-test-{os.getpid()}"
        probe.write_text("ok")
    except OSError as exc:
        return [f"the output folder {folder} is not writable ({exc.strerror or exc}). Set paths.output_dir to a writable folder"]
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < float(min_free_mb):
        return [f"the disk of the output folder {folder} has {free_mb:.0f} MB free, less than paths.min_free_mb={min_free_mb}; "
                "free some space or set paths.output_dir to another disk"]
    return []


def check_config(cfg: DictConfig, tool: str = "aelab-train") -> None:
    """Log the warnings of ``cfg`` and exit with all its problems listed, if it has any."""
    problems, warnings = config_problems(cfg)
    for warning in warnings:
        log.warning("%s", warning)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise SystemExit(f"{tool}: error: the config has {len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was run:\n{lines}")
