"""The protocol every evaluation follows, and the loop that runs them on a loaded run.

An evaluation is one class (a subclass of :class:`EvalTask`, its options in its
constructor's signature) and one config (``conf/eval/<name>.yaml``, holding
``<name>: {_target_: ..., options}``). ``aelab-train eval=[anomaly,probe]`` runs
the selected tasks after testing; ``aelab-eval run=<folder> eval=[...]`` runs
them later. Both go through :func:`run_tasks`; results land in the run's
``metrics.json`` (through :class:`~aelab.store.record.RunRecord`), its loggers and
``aelab-compare``'s tables (through the task's :meth:`EvalTask.metric_info`).

A task states what it needs in ``needs``:

* a model feature (``elbo``, ``prior``, ``iwae``; see ``ReconstructionModule.features``),
* ``labels`` — the dataset has class labels,
* ``one_class`` — the run was trained on one class (``data.normal_class``) or
  the task names its normal class (option ``normal_class``),
* ``factors`` — the dataset has known generating factors,
* ``images`` — the data are images (not vectors), ``masks`` — per-pixel anomaly masks,
* ``unit_range`` — the values lie in [0, 1] (the data's ``value_range``; PSNR, pictures),

and ``needs_when`` the needs of some option values (``{"scores": {"elbo": "elbo"}}``).
The early config check reads both from the source, without importing the task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aelab.errors import ConfigError
from aelab.metric_info import MetricInfo

log = logging.getLogger("aelab.eval")

DATA_NEEDS = ("labels", "one_class", "factors", "images", "masks", "unit_range")


@dataclass
class EvalResult:
    """What a task's :meth:`EvalTask.run` returns.

    Args:
        metrics: the numbers, keyed ``eval/<name>`` (declared in the task's :meth:`EvalTask.metric_info`):
            they go into ``metrics.json`` (``final`` and ``eval.metrics``), the loggers and the tables.
        details: anything else worth keeping (per-class numbers, settings used), JSON-serialisable:
            ``metrics.json`` → ``eval.details.<task name>``.
        files: name → the files the task wrote (absolute, or relative to the ``out_dir`` it was given);
            recorded relative to the run folder under ``eval.files`` (``<task>/<name>``). PNGs are also
            sent to the run's image-taking loggers (W&B, MLflow, TensorBoard).
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


class EvalTask:
    """Base class of the evaluations (see the module docstring)."""

    #: the task's name: its config file and its key under ``eval``
    name: ClassVar[str] = "task"
    #: what a run must offer for this task
    needs: ClassVar[tuple[str, ...]] = ()
    #: needs of particular option values: {option: {value: need}}
    needs_when: ClassVar[dict[str, dict[Any, str]]] = {}

    def metric_info(self) -> list[MetricInfo]:
        """What the numbers this task reports mean (direction, label, default table column)."""
        return []

    def required(self) -> list[str]:
        """``needs`` plus the needs of the options this task was given."""
        out = list(self.needs)
        for option, by_value in self.needs_when.items():
            value = getattr(self, option, None)
            values = value if isinstance(value, (list, tuple)) else [value]
            out += [need for v, need in by_value.items() if v in values]
        return out

    def refusal(self, run) -> str | None:
        """Why this task cannot run on ``run`` (None when it can)."""
        features = tuple(run.model.features)
        for need in self.required():
            if need == "labels" and not run.data.has_labels:
                return f"the {self.name} task needs class labels, and {run.data.name} has none"
            if need == "images" and not run.data.is_images:
                return f"the {self.name} task needs images; {run.data.name} holds vectors of {run.data.dims[0]} values"
            if need == "unit_range" and run.model.value_range != "unit":
                return (
                    f"the {self.name} task needs values in [0, 1] (images, PSNR); {run.run_dir.name} was trained on "
                    "real-valued data"
                )
            if need == "masks" and not run.data.has_masks:
                return f"the {self.name} task needs per-pixel anomaly masks (data=anomaly_folder with ground_truth/)"
            if (
                need == "one_class"
                and run.data.normal_class is None
                and run.data.normal_label is None
                and getattr(self, "normal_class", None) is None
            ):
                return (
                    f"the {self.name} task needs a one-class run: train with data.normal_class=k "
                    f"(or name the normal class with eval.{self.name}.normal_class=k)"
                )
            if need == "factors" and not run.data.factor_names:
                return f"the {self.name} task needs a dataset with known generating factors (such as data=sprites)"
            if need not in DATA_NEEDS and need not in features:
                return (
                    f"the {self.name} task needs a model with '{need}' (a VAE); "
                    f"{run.run_dir.name} is a {type(run.model).__name__}, "
                    f"which offers {list(features) or 'none of these'}"
                )
        return None

    def run(self, run, out_dir: Path) -> EvalResult:
        """Evaluate the loaded ``run``, writing figures into ``out_dir``."""
        raise NotImplementedError


@dataclass
class Evaluation:
    """The merged results of several tasks on one run."""

    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative to ``root`` (the run folder)
    infos: list[MetricInfo] = field(default_factory=list)
    root: Path = Path(".")

    @property
    def images(self) -> dict[str, Path]:
        return {k: self.root / v for k, v in self.files.items() if str(v).endswith(".png")}


def run_tasks(run, tasks: dict[str, EvalTask], out_dir: Path | None = None, after_each=None) -> Evaluation:
    """Run ``tasks`` (name → task) on a loaded run; refuse, before any of them runs, those it cannot serve.

    ``after_each(evaluation)`` is called with the results so far after every task (to record them: a run stopped
    later keeps the finished tasks' numbers)."""
    refusals = [why for why in (task.refusal(run) for task in tasks.values()) if why]
    if refusals:
        raise ConfigError("; ".join(refusals))
    out_dir = out_dir or run.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(run.run_dir).resolve()
    result = Evaluation(root=root)
    for name, task in tasks.items():
        log.info("%s: %s", run.run_dir.name, name)
        done = task.run(run, out_dir)
        result.metrics.update(done.metrics)
        result.details[name] = done.details
        for key, value in done.files.items():  # one form for every task: relative to the run folder
            path = (Path(value) if Path(value).is_absolute() else Path(out_dir) / value).resolve()
            result.files[f"{name}/{key}"] = str(path.relative_to(root)) if root in path.parents else str(path)
        result.infos += task.metric_info()
        if after_each is not None:
            after_each(result)
    return result
