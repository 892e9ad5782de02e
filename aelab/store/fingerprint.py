"""The fingerprint of the config that made a run's checkpoints, and what changed since.

A run folder's ``.hydra/config.yaml`` is the config its checkpoints were trained with, and
``metrics.json`` keeps its fingerprint (``config_fingerprint``). Continuing or skipping a run
under a config that differs in anything that shapes training would mislabel the run (its
record would name values it never trained with) or destroy it (a model of another size
written over ``last.ckpt``), so the pre-run step (:mod:`aelab.run.precheck`) compares the
two first. Keys in :data:`CONTINUATION_KEYS` are meant to change between sittings of one
run — train longer, log elsewhere, run on another device, evaluate differently — and do not
count. Everything here works on plain containers (``OmegaConf.to_container(cfg,
resolve=False)``): interpolations compare as written, so ``${seed}`` in ``data.seed`` is the
same on both sides and a changed ``seed`` shows up as ``seed``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from aelab._compat import current_name

#: config keys (and the subtrees under them) that may change when a run is continued
CONTINUATION_KEYS: tuple[str, ...] = (
    "trainer.max_epochs",  # train longer (or stop earlier)
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",  # where it runs
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.enable_model_summary",  # what it shows and logs
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.plugins",  # how checkpoints are written and read (aelab's checkpoint IO), not what is trained
    "logger",
    "callbacks.progress_bar",
    "callbacks.reconstruction_grid",
    "callbacks.generation_grids",
    "callbacks.lr_monitor",
    "callbacks.fault",  # fault injection for tests
    "eval",  # evaluations after training
    "test",
    "test_ckpt",
    "optimized_metric",
    "tags",
    "name",  # bookkeeping of the invocation itself
    "resume",
    "ckpt_path",
    "on_config_change",
    "trust_checkpoint",
    "trust_packages",
    "threads",
    "steps_per_call",  # how batches are grouped into Lightning calls: the same steps, bit for bit
    "verbose",
    "paths",
    "sweep",
    "search",
    "hydra",
)


#: keys aelab's config gained after 0.1, with the value a run recorded without them trained with (Lightning's defaults)
IMPLICIT_DEFAULTS: dict[str, Any] = {
    "trainer.accumulate_grad_batches": 1,
    "trainer.val_check_interval": 1.0,
}


def _allowed(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in CONTINUATION_KEYS)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.bottleneck": 8, ...}``: the leaves of a plain config (lists are leaves; ``_target_`` names current)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_" and isinstance(value, str):
                value = current_name(value)  # a folder written by aelab 0.1 names the old module paths
            out.update(flatten(value, path) if isinstance(value, dict) and value else {path: value})
        return out
    return {prefix: node}


def training_config(config: dict[str, Any]) -> dict[str, Any]:
    """The leaves of ``config`` that shape training (every key but :data:`CONTINUATION_KEYS`)."""
    leaves = flatten(config)
    split = legacy_split_seed(config)
    if split is not None:
        leaves["data.split_seed"] = split
    return {k: v for k, v in {**IMPLICIT_DEFAULTS, **leaves}.items() if not _allowed(k)}


#: ``data.split_seed`` as a config writes a split drawn from the run's seed (what runs before the key did)
FOLLOWS_SEED = "${seed}"


def legacy_split_seed(config: dict[str, Any]) -> Any:
    """What ``data.split_seed`` was for a config written before the key existed — its ``data.seed`` as written
    (``${seed}``: the split followed the run's seed) — or None when the config has the key (or no data node).

    Such a run folder continues and reloads with the split it trained on, and is not refused as "another config"
    for lacking a key that did not exist (:func:`aelab.run.precheck.adopt_recorded_split`)."""
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "split_seed" in data:
        return None
    return data.get("seed", 0)


def fingerprint(config: dict[str, Any]) -> str:
    """A short hash of :func:`training_config` (the same for configs that train the same run)."""
    canonical = json.dumps(training_config(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_changes(recorded: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, the run's value, the new value)`` for every training key that differs (missing: ``None``)."""
    before, after = training_config(recorded), training_config(new)

    def same(key: str) -> bool:
        if before.get(key) == after.get(key):
            return True
        # a split drawn from the seed (${seed}) is the split of that seed's number
        return key == "data.split_seed" and _split(before) == _split(after) is not None

    return [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if not same(k)]


def _split(leaves: dict[str, Any]) -> Any:
    split = leaves.get("data.split_seed")
    return leaves.get("seed") if split == FOLLOWS_SEED else split


def changes_since(recorded: Path, cfg: Any) -> list[tuple[str, Any, Any]]:
    """:func:`config_changes` from a run's recorded ``.hydra/config.yaml`` to the composed ``cfg`` (its ``hydra``
    node left out); a file that cannot be read is a :class:`~aelab.errors.ConfigError` naming it."""
    from omegaconf import OmegaConf

    from aelab.errors import ConfigError

    try:
        before = OmegaConf.to_container(OmegaConf.load(recorded), resolve=False)
    except Exception as exc:  # noqa: BLE001 — any parse error: an unreadable record is reported, not trained over
        raise ConfigError(f"{recorded} cannot be read ({type(exc).__name__}); choose another name=") from None
    now = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=False)
    return config_changes(before if isinstance(before, dict) else {}, now)


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 12) -> str:
    """The changes as lines ``  key: <the run's> → <now>``."""

    def show(value: Any) -> str:
        return "(not set)" if value is None else json.dumps(value, default=str) if not isinstance(value, str) else value

    lines = [f"  {key}: {show(before)} → {show(after)}" for key, before, after in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more")
    return "\n".join(lines)
