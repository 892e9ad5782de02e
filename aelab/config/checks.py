"""Checks of a composed config before anything is built, derived from the components' own signatures.

Every component in a config names its class or function by ``_target_``; the
signature of that callable — its parameters, their annotated types and ranges
(:mod:`aelab.config.constraints`) — is the one declaration of what the component
accepts. :mod:`aelab.config.signatures` reads those signatures from source without
importing torch or Lightning, so ``aelab-train`` refuses a bad config in about
a second, before it creates a run folder:

* a key the component does not take (misspelt, or added with ``+``), with
  "did you mean" and the accepted keys — at any depth (``model.encoder.*``,
  ``model.optimizer.*`` against ``torch.optim.Adam``, ``trainer.*`` against
  Lightning's own ``Trainer``, callbacks, loggers, evaluation tasks);
* a value of the wrong type, outside its range or not among its choices;
* an argument the optimizer or scheduler refuses in its own first checks (``model.optimizer.lr=-1``:
  torch's "Invalid learning rate"), read from its constructor's source (:func:`guard_problems`);
* an evaluation task the model or data cannot serve (its ``needs``);
* a model that cannot reach the data's values: the data's ``value_range`` (``real`` for
  ``data=arrays data.normalize=none``) checked against the model's ``option_rules``
  (``model.output_activation=sigmoid`` keeps outputs in [0, 1]);
* top-level keys against :class:`aelab.config.options.TrainOptions`, and the output
  folder (writable, ``paths.min_free_mb`` free).

:func:`config_problems` returns every problem at once; the pre-run step
(:mod:`aelab.run.precheck`) prints them and refuses the run.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aelab.config.constraints import value_problems
from aelab.config.rules import missing, rule_problems
from aelab.config.signatures import Signature, _spec_locations, signature

log = logging.getLogger("aelab.config")

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
#: the top-level groups whose entries are components (each with a _target_)
COMPONENT_DICTS = ("callbacks", "logger", "eval")
#: the top-level groups that are one component each
COMPONENTS = ("data", "noise", "model", "trainer")
TOP_OPTIONS = "aelab.config.options.TrainOptions"
RESUME_MODES = ("auto", "never")


def _value(node: DictConfig, key: str) -> Any:
    """The resolved value of ``node[key]``; a sentinel when it is an interpolation that cannot be resolved here."""
    try:
        value = OmegaConf.select(node, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return _UNRESOLVED
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        except OmegaConfBaseException:
            return _UNRESOLVED
    return value


_UNRESOLVED = object()


def _unknown_key(path: str, key: str, sig: Signature, tool: str = "aelab-train") -> str:
    """ "<path>.<key> is not an option of <path>; did you mean ...? <target> takes: ..." (top level: path "")."""
    options = [name for name in sig.params if not name.startswith("_")]
    close = difflib.get_close_matches(key, options, n=1)
    prefix = f"{path}." if path else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    if not path:
        what = "a top-level option of aelab-train" if tool == "aelab-train" else f"an option of {tool}"
        return f"{key} is not {what}{hint} ({tool}'s options are: {', '.join(options)})"
    return f"{prefix}{key} is not an option of {path}{hint} ({sig.target} takes: {', '.join(options)})"


def _target_problem(path: str, target: str) -> str | None:
    top = target.split(".")[0]
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:  # os, sys, posix: there, frozen or built in
        return None
    if _spec_locations(top) == (None, []):
        return (
            f"{path}._target_={target} cannot be imported: no module {top!r} on the Python path "
            "(install the package, or add its folder to PYTHONPATH)"
        )
    return None


def node_problems(node: Any, path: str, target: str | None = None) -> list[str]:
    """Problems of a component config ``node`` (at ``path``) against its ``_target_``'s signature, recursively."""
    if not isinstance(node, DictConfig):
        return [f"{path} must be a mapping of options (got {node!r})"]
    target = str(node.get("_target_")) if "_target_" in node else target
    if target is None:
        return []
    missing = _target_problem(path, target)
    if missing:
        return [missing]
    sig = signature(target)
    if not sig.known:
        return []
    problems: list[str] = []
    for key in node.keys():
        key = str(key)
        if key in HYDRA_KEYS:
            continue
        param = sig.params.get(key)
        if param is None:
            if not sig.var_keyword:
                problems.append(_unknown_key(path, key, sig))
            continue
        if OmegaConf.is_missing(node, key):
            problems.append(f"{path}.{key} must be set: {sig.target} needs it (e.g. {path}.{key}=...)")
            continue
        value = _value(node, key)
        if value is _UNRESOLVED:
            continue
        if isinstance(value, DictConfig) and "_target_" in value:
            problems += node_problems(value, f"{path}.{key}")
            continue
        if isinstance(value, DictConfig) and param.type.kind == "class":
            nested = signature(param.type.name)
            if nested.is_dataclass:
                problems += node_problems(value, f"{path}.{key}", param.type.name)
                continue
        if isinstance(value, DictConfig) and param.type.kind in ("any", "dict", "class"):
            continue
        problems += value_problems(f"{path}.{key}", value, param.type)
    rules = [*(sig.attrs.get("option_rules") or ()), *LIBRARY_RULES.get(target, ())]
    if not problems and rules:
        problems += rule_problems(rules, _option_values(node, sig), path)
    return problems


#: rules a library's constructor enforces but its signature does not declare: checked before any folder exists
#: (Lightning would refuse them only once the Trainer is built, after the run folder was made)
LIBRARY_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "lightning.pytorch.Trainer": (
        ("max_epochs is None or max_epochs >= -1", "{path}.max_epochs={max_epochs} must be -1 (no limit) or >= 0"),
        ("max_steps is None or max_steps >= -1", "{path}.max_steps={max_steps} must be -1 (no limit) or >= 0"),
        ("min_epochs is None or min_epochs >= 0", "{path}.min_epochs={min_epochs} must be >= 0"),
        ("log_every_n_steps is None or log_every_n_steps >= 1", "{path}.log_every_n_steps must be >= 1"),
        ("accumulate_grad_batches >= 1", "{path}.accumulate_grad_batches={accumulate_grad_batches} must be >= 1"),
        (
            "check_val_every_n_epoch is None or check_val_every_n_epoch >= 1",
            "{path}.check_val_every_n_epoch={check_val_every_n_epoch} must be >= 1 (or null)",
        ),
    ),
}


def _option_values(node: DictConfig, sig: Signature) -> dict[str, Any]:
    """The value of each of a component's options: the config's, else the signature's default; unknown ones marked."""
    from aelab.config.signatures import _is_sentinel

    values: dict[str, Any] = {}
    for name, param in sig.params.items():
        if name in node and not OmegaConf.is_missing(node, name):
            value = _value(node, name)
            if isinstance(value, DictConfig):
                try:
                    value = OmegaConf.to_container(value, resolve=True)
                except OmegaConfBaseException:
                    value = _UNRESOLVED
            values[name] = missing() if value is _UNRESOLVED else value
        else:
            values[name] = missing() if _is_sentinel(param.default) or name in node else param.default
    return values


def _dict_of_components(group: str, node: Any) -> list[str]:
    if node is None:
        return []
    if not isinstance(node, DictConfig):
        return [f"{group} must be a mapping of components (got {node!r})"]
    problems = []
    for name in node.keys():
        child = node.get(name)
        if child is None:
            continue
        if not isinstance(child, DictConfig) or "_target_" not in child:
            what = "an evaluation task" if group == "eval" else f"a {group} entry"
            problems.append(
                f"{group}.{name} is not {what} with a _target_ (got {child!r}); "
                + ("select tasks with eval=[name,...]" if group == "eval" else f"set {group}.{name}._target_")
            )
            continue
        problems += node_problems(child, f"{group}.{name}")
    return problems


def _eval_needs(cfg: DictConfig) -> list[str]:
    """Evaluation tasks the model or the data cannot serve, from the tasks' declared ``needs``."""
    tasks = cfg.get("eval")
    model, data = cfg.get("model"), cfg.get("data")
    if not isinstance(tasks, DictConfig) or not isinstance(model, DictConfig) or "_target_" not in model:
        return []
    model_sig = signature(str(model._target_))
    features = tuple(model_sig.attrs.get("features", ()) or ())
    data_sig = signature(str(data._target_)) if isinstance(data, DictConfig) and "_target_" in data else None
    problems = []
    for name in tasks.keys():
        task = tasks.get(name)
        if not isinstance(task, DictConfig) or "_target_" not in task:
            continue
        sig = signature(str(task._target_))
        needs = list(sig.attrs.get("needs", ()) or ())
        for option, by_value in (sig.attrs.get("needs_when") or {}).items():
            value = (
                _value(task, option)
                if option in task
                else sig.params.get(option).default
                if option in sig.params
                else None
            )
            values = value if isinstance(value, (list, tuple)) else [value]
            needs += [need for v, need in by_value.items() if v in values]
        for need in needs:
            if need == "one_class":
                dataset_marks = data_sig is not None and data_sig.attrs.get("normal_label") is not None
                if (
                    (data is None or data.get("normal_class") is None)
                    and task.get("normal_class") is None
                    and not dataset_marks
                ):
                    problems.append(
                        f"eval.{name} needs a one-class run: set data.normal_class=k (or eval.{name}.normal_class=k)"
                    )
            elif need == "labels":
                if data_sig is not None and data_sig.attrs.get("has_labels", True) is False:
                    problems.append(f"eval.{name} needs class labels, and {data._target_} has none")
            elif need == "factors":
                if data_sig is not None and not data_sig.attrs.get("has_factors", False):
                    problems.append(f"eval.{name} needs a dataset with known generating factors (such as data=sprites)")
            elif need == "unit_range":
                declared = data_range(cfg)
                if declared is not None and declared[0] != "unit":
                    problems.append(f"eval.{name} needs values in [0, 1] (images, PSNR), and {declared[1]}")
            elif need in ("images", "masks"):
                continue  # told by the data themselves (an array file may hold images or vectors): checked when it runs
            elif model_sig.known and need not in features:
                problems.append(
                    f"eval.{name} needs a model with '{need}' (a VAE); model {model._target_} offers "
                    f"{list(features) or 'none of these'}"
                )
    return problems


def data_range(cfg: DictConfig) -> tuple[str, str] | None:
    """``(the data's value range, where it comes from in words)`` as the data's source declares it
    (``value_range``, ``value_range_when``: :class:`aelab.data.ImageDataModule`); None when it cannot be known here."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or "_target_" not in data:
        return None
    sig = signature(str(data._target_))
    if not sig.known:
        return None
    for option, ranges in (sig.attrs.get("value_range_when") or {}).items():
        value = _value(data, option) if option in data else sig.params[option].default if option in sig.params else None
        if value is not _UNRESOLVED and isinstance(ranges, dict) and value in ranges:
            return str(ranges[value]), f"data.{option}={value} gives {_RANGE_WORDS.get(ranges[value], ranges[value])}"
    declared = str(sig.attrs.get("value_range", "unit"))  # a dataset's own property is known once it is built
    return declared, f"data {data._target_} holds {_RANGE_WORDS.get(declared, declared)}"


_RANGE_WORDS = {"unit": "values in [0, 1]", "real": "real values"}


def _range_problems(cfg: DictConfig) -> list[str]:
    """The model's option rules under the data's value range (the model gets it from the data, not the config)."""
    declared, model = data_range(cfg), cfg.get("model")
    if declared is None or declared[0] == "unit" or not isinstance(model, DictConfig) or "_target_" not in model:
        return []
    sig = signature(str(model._target_))
    if not sig.known or "value_range" not in sig.params:
        return []
    values = {**_option_values(model, sig), "value_range": declared[0]}
    return [f"{declared[1]}, and {p}" for p in rule_problems(sig.attrs.get("option_rules"), values, "model")]


def _top_problems(
    cfg: DictConfig, overrides: list[str], target: str = TOP_OPTIONS, tool: str = "aelab-train"
) -> list[str]:
    problems = []
    sig = signature(target)
    added = {
        str(o).split("=", 1)[0][1:] for o in overrides if str(o).startswith("+") and "." not in str(o).split("=", 1)[0]
    }
    for key in cfg.keys():
        key = str(key)
        if key == "hydra":
            continue
        if key not in sig.params:
            if key in added:
                problems.append(_unknown_key("", key, sig, tool))
            continue
        if key in COMPONENTS or key in COMPONENT_DICTS or OmegaConf.is_missing(cfg, key):
            continue  # components are checked by their own signatures; a missing value by the entry point's own words
        value = _value(cfg, key)
        if value is _UNRESOLVED:
            continue
        param = sig.params[key]
        if isinstance(value, DictConfig) and param.type.kind == "class":
            problems += node_problems(value, key, param.type.name)
        else:
            problems += value_problems(key, value, param.type)
    if target != TOP_OPTIONS:
        return problems
    resume = cfg.get("resume", "auto")
    if isinstance(resume, str) and resume not in RESUME_MODES and not Path(resume).expanduser().is_dir():
        problems.append(f"resume={resume!r} must be auto, never, or an existing run folder to continue")
    name = cfg.get("name")
    if name is not None and (not str(name) or "/" in str(name) or str(name) in (".", "..")):
        problems.append(f"name={name!r} must be a plain folder name (no '/')")
    return problems


def config_problems(cfg: DictConfig, overrides: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Every problem of the composed ``cfg`` (errors) and the warnings, without building anything."""
    if overrides is None:
        overrides = task_overrides(cfg)
    problems = _top_problems(cfg, overrides)
    for group in COMPONENTS:
        if cfg.get(group) is not None:
            problems += node_problems(cfg.get(group), group)
    for group in COMPONENT_DICTS:
        problems += _dict_of_components(group, cfg.get(group))
    if not problems:
        problems += _range_problems(cfg) + _eval_needs(cfg)
    model = cfg.get("model")
    for part in ("optimizer", "scheduler") if isinstance(model, DictConfig) else ():
        problems += guard_problems(model.get(part), f"model.{part}")
    return problems, []


def guard_problems(node: Any, path: str) -> list[str]:
    """What the constructor of the component ``node`` would refuse first among the values the config gives it, read
    from its own checks (:func:`aelab.config.signatures._guards`: ``model.optimizer.lr=-1`` → torch's "Invalid
    learning rate: -1") in the words of the pre-run step's own build of the optimizer
    (:func:`aelab.run.precheck.optimizer_check`), which needs torch, Lightning and the model — seconds — to say the
    same. Only values the config sets are read: an argument the builder passes (the optimizer's parameters) is not
    judged by its default."""
    from aelab.config.rules import Unknown, evaluate

    if not isinstance(node, DictConfig) or "_target_" not in node:
        return []
    sig = signature(str(node._target_))
    if not sig.known or not sig.guards:
        return []
    given = {k: v for k, v in _option_values(node, sig).items() if k in node}
    for expression, message in sig.guards:
        try:
            if evaluate(expression, given):
                continue
            text = message.format_map(given)
        except Unknown:
            continue
        except Exception:  # noqa: BLE001 — a value the test cannot compare (a string for a number): its type check says so
            continue
        try:
            shown = OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException:
            return []
        options = ", ".join(f"{k}={v}" for k, v in shown.items() if not str(k).startswith("_"))
        return [f"{path} ({options}) cannot be built: {text}"]  # the constructor stops at its first refusal
    return []


#: the typed options of the other entry points (their configs: conf/evaluate.yaml, predict.yaml, export.yaml)
ENTRY_OPTIONS = {
    "aelab-eval": "aelab.config.options.EvalOptions",
    "aelab-predict": "aelab.config.options.PredictOptions",
    "aelab-export": "aelab.config.options.ExportOptions",
}


def entry_problems(tool: str, cfg: DictConfig, overrides: list[str] | None = None) -> list[str]:
    """Every problem of the config of ``aelab-eval``, ``aelab-predict`` or ``aelab-export`` (their typed options)."""
    if overrides is None:
        overrides = task_overrides(cfg)
    problems = _top_problems(cfg, overrides, ENTRY_OPTIONS[tool], tool)
    if "eval" in cfg:
        problems += _dict_of_components("eval", cfg.get("eval"))
    return problems


def task_overrides(cfg: DictConfig) -> list[str]:
    """The task overrides a config was composed with, as typed (``${...}`` unresolved); [] outside Hydra."""
    hydra_node = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if hydra_node is not None:
        task = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
        return [str(o) for o in (OmegaConf.to_container(task, resolve=False) if task is not None else [])]
    try:
        from hydra.core.hydra_config import HydraConfig

        return (
            [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)]
            if HydraConfig.initialized()
            else []
        )
    except Exception:  # noqa: BLE001 — no Hydra context (a notebook)
        return []


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


def accelerator_problem(trainer: DictConfig | dict | None) -> str | None:
    """Why ``trainer.accelerator`` cannot run on this machine (a GPU asked for, none visible), or None.

    Imports torch, so only when a GPU is asked for; checked where the job runs (a SLURM
    login node without GPUs may submit GPU jobs).
    """
    accelerator = str((trainer or {}).get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda", "mps"):
        return None
    import torch

    if accelerator == "mps":
        ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    else:
        ok = torch.cuda.is_available()
    if ok:
        return None
    return (
        f"trainer.accelerator={accelerator}, but torch {torch.__version__} sees no "
        f"{'CUDA GPU' if accelerator != 'mps' else 'Apple GPU'} on this machine: use trainer=cpu "
        "(or trainer.accelerator=auto to take a GPU when there is one)"
    )


def local_ddp_sweep_problem(trainer: DictConfig | dict | None, launcher_target: str) -> str | None:
    """Why a multirun job with this trainer cannot run under this Hydra launcher, or None.

    Lightning starts DDP ranks by re-running the command line, ``-m`` included,
    so only a launcher that starts the ranks itself (SLURM) can host DDP jobs.
    """
    n = world_size(trainer)
    if n <= 1 or "SlurmLauncher" in launcher_target:
        return None
    name = (
        (launcher_target.rsplit(".", 1)[-1].replace("Launcher", "").lower() or "basic") if launcher_target else "basic"
    )
    return (
        f"a multirun (-m) with the {name} launcher cannot run DDP jobs (trainer.devices x num_nodes = {n}): "
        "Lightning starts the extra DDP processes by re-running the command line, which would re-launch the whole "
        "sweep. "
        "Instead: run each configuration as its own `aelab-train trainer=ddp ...` command; or sweep one process per "
        "job "
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
        return [
            f"the output folder {folder} cannot be created: {existing} is not a folder. Set paths.output_dir to a "
            f"writable folder"
        ]
    probe = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".aelab-write-test-{os.getpid()}"
        probe.write_text("ok")
    except OSError as exc:
        return [
            f"the output folder {folder} is not writable ({exc.strerror or exc}). Set paths.output_dir to a writable "
            f"folder"
        ]
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < float(min_free_mb):
        return [
            f"the disk of the output folder {folder} has {free_mb:.0f} MB free, less than "
            f"paths.min_free_mb={min_free_mb}; "
            "free some space or set paths.output_dir to another disk"
        ]
    return []
