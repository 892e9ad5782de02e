"""What a metric means, declared once by whatever produces it.

A model declares the metrics it logs (:meth:`ReconstructionModule.metric_info
<aelab.models.base.ReconstructionModule.metric_info>`), an evaluation task the
numbers it reports (``EvalTask.metric_info``), the run record the facts it
keeps (parameters, wall time). Each :class:`MetricInfo` says which direction is
better (the best value in ``metrics.json``), what W&B keeps as the run's summary,
the axis label of plots, whether ``aelab-compare`` shows it as a default
column, and which metric it is a baseline of (drawn on that metric's axes). The
run's ``metrics.json`` stores the infos of its metrics, so tables and plots read
them from the runs themselves — nothing keeps a list of metric names elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

STAGES = ("train", "val", "test")


@dataclass(frozen=True)
class MetricInfo:
    """One metric key as logged (``val/recon_loss``, ``gap/recon_loss``, ``eval/auroc``)."""

    key: str
    label: str = ""
    #: True: larger is better; False: smaller is better; None: no direction (a gap, a count)
    higher_is_better: bool | None = None
    #: what W&B keeps in the run summary: min | max | last (None: W&B's default, the last value)
    summary: Literal["min", "max", "last"] | None = None
    #: a default column of aelab-compare's tables (in the order the infos were declared)
    column: bool = False
    #: this number is a baseline of that metric, or of each of those (PCA's error for the model's
    #: ``test/recon_loss``, the noisy input's PSNR for the denoised one's, the majority class for both classifiers'
    #: accuracies): figures draw it on that metric's axes, dashed, not in a panel of its own
    baseline_for: str | tuple[str, ...] | None = None

    def baseline_of(self) -> tuple[str, ...]:
        """The metrics this one is a baseline of."""
        if not self.baseline_for:
            return ()
        return (self.baseline_for,) if isinstance(self.baseline_for, str) else tuple(self.baseline_for)

    #: this number is another reading of that metric (PSNR of the same squared error as ``test/recon_loss``):
    #: tables show both, figures draw no panel for it beside that metric's
    restates: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("key")
        return data


def stage_metrics(
    name: str,
    label: str,
    higher_is_better: bool | None,
    stages: Iterable[str] = STAGES,
    columns: Iterable[str] = ("test",),
    summary_stage: str | None = "val",
    best: bool = True,
) -> list[MetricInfo]:
    """The infos of one quantity logged under several stages (``train/x``, ``val/x``, ``test/x``).

    ``columns`` names the stages shown in tables (``best/val`` for the best
    validation value); the ``summary_stage`` gets the W&B summary min/max.
    """
    columns = list(columns)
    summary = None if higher_is_better is None else ("max" if higher_is_better else "min")
    infos: dict[str, MetricInfo] = {}
    for stage in stages:
        infos[f"{stage}/{name}"] = MetricInfo(
            f"{stage}/{name}",
            f"{stage} {label}",
            higher_is_better,
            summary if stage == summary_stage else None,
            stage in columns,
        )
    if best and "val" in stages:
        infos[f"best/val/{name}"] = MetricInfo(
            f"best/val/{name}", f"best validation {label}", higher_is_better, None, "best/val" in columns
        )
    ordered = [infos[f"{c}/{name}"] for c in columns if f"{c}/{name}" in infos]  # columns in the order asked for
    return ordered + [info for info in infos.values() if info not in ordered]


class MetricCatalog:
    """Metric infos by key, in declaration order; tolerant of keys nobody declared."""

    def __init__(self, infos: Iterable[MetricInfo | dict] = (), **by_key: dict):
        self._infos: dict[str, MetricInfo] = {}
        self.add(infos)
        for key, data in by_key.items():
            self.add([MetricInfo(key, **data)])

    def add(self, infos: Iterable[MetricInfo | dict]) -> MetricCatalog:
        for info in infos:
            if isinstance(info, dict):
                info = MetricInfo(**info)
            self._infos.setdefault(info.key, info)
        return self

    @classmethod
    def from_json(cls, data: dict | None) -> MetricCatalog:
        """The catalog a record stored; fields this aelab does not know (a newer writer's) are left out."""
        from dataclasses import fields

        known = {f.name for f in fields(MetricInfo)} - {"key"}

        def kept(value: dict) -> dict:
            out = {k: v for k, v in value.items() if k in known}
            if isinstance(out.get("baseline_for"), list):  # a tuple, written to JSON as a list
                out["baseline_for"] = tuple(out["baseline_for"])
            return out

        return cls(MetricInfo(key, **kept(value)) for key, value in (data or {}).items() if isinstance(value, dict))

    def to_json(self) -> dict:
        return {key: info.to_json() for key, info in self._infos.items()}

    def __contains__(self, key: str) -> bool:
        return key in self._infos

    def __iter__(self):
        return iter(self._infos.values())

    def get(self, key: str) -> MetricInfo | None:
        return self._infos.get(key)

    def higher_is_better(self, key: str) -> bool | None:
        """The direction of ``key`` (``best/val/x`` and ``train_eval/x`` follow ``val/x``)."""
        info = self._infos.get(key)
        if info is None and key.startswith("best/"):
            info = self._infos.get(key[len("best/") :])
        if info is None and "/" in key:
            info = self._infos.get("val/" + key.split("/", 1)[1])
        return None if info is None else info.higher_is_better

    def label(self, key: str) -> str:
        info = self._infos.get(key)
        return info.label if info is not None and info.label else key

    def columns(self) -> list[str]:
        return [key for key, info in self._infos.items() if info.column]

    def summaries(self) -> dict[str, str]:
        return {key: info.summary for key, info in self._infos.items() if info.summary}
