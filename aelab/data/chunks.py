"""Chunks: several consecutive training batches handed to the model in one Lightning call (``steps_per_call``).

Lightning pays a fixed cost around every call of ``training_step`` — its hooks, loop bookkeeping and
logging machinery, 0.5-1 ms on a CPU: 5-8 % of a small model's step. So aelab's training loader
yields *chunks* of ``steps_per_call`` consecutive batches, gathered at once, and the model's step
(:mod:`aelab.models.step`) takes one optimizer step per batch of the chunk: the batches, their order
and the optimizer steps are those of ``steps_per_call=1``.

A chunk is a batch dict whose tensors hold its batches one after another (still uint8: each batch
becomes float pixels when the step reaches it, see :func:`split_chunk`), plus ``batch["chunk"]``:
the batch sizes, the index in the epoch of its first batch, whether it ends the epoch, and the
seeds of dynamic binarization. A chunk never spans a point where Lightning acts between batches —
a validation inside the epoch, the end of ``limit_train_batches`` — so those stay in units of batches:
:func:`batch_units` reads the Trainer's batch-unit settings and translates them into calls.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from aelab.errors import ConfigError

#: the key of a chunk's description in its batch dict
CHUNK = "chunk"


class Chunk(NamedTuple):
    """What the training sampler yields: the image indices of ``len(sizes)`` consecutive batches."""

    indices: torch.Tensor  # int64; a tensor, not a list: no round trip through Python ints (0.15 ms a chunk)
    sizes: list[int]
    first: int  # index in the epoch of the first batch
    last: bool  # the chunk ends the epoch


def calls_per_interval(num_batches: int, size: int, every: int) -> int:
    """How many chunks each validation interval of ``every`` batches is cut into, so that Lightning, counting
    calls, validates where it would count batches: after every full interval, and not after the epoch's last,
    shorter one (which must then make fewer chunks than a full one)."""
    calls = math.ceil(every / size)
    rest = num_batches % every
    if rest and math.ceil(rest / size) >= calls:
        calls = math.ceil(rest / size) + 1  # smaller chunks in the full intervals (each still >= 1 batch)
    return calls


def plan_chunks(start: int, num_batches: int, size: int, every: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` batch ranges of at most ``size`` batches from ``start`` to ``num_batches``. With a
    validation every ``every`` batches, no chunk spans a validation point and each full interval is
    :func:`calls_per_interval` chunks."""
    if not every:
        bounds = list(range(size, num_batches, size)) + [num_batches]
    else:
        calls, bounds = calls_per_interval(num_batches, size, every), []
        for lo in range(0, num_batches, every):
            hi = min(lo + every, num_batches)
            if hi - lo == every:  # a full interval: `calls` chunks of near-equal size
                base, extra = divmod(every, calls)
                bounds += [lo + i * base + min(i, extra) for i in range(1, calls)] + [hi]
            else:
                bounds += list(range(lo + size, hi, size)) + [hi]
    for stop in bounds:
        if stop > start:
            yield start, stop
            start = stop


def count_chunks(num_batches: int, size: int, every: int | None = None) -> int:
    """How many chunks :func:`plan_chunks` makes of an epoch of ``num_batches`` batches."""
    return sum(1 for _ in plan_chunks(0, num_batches, size, every))


def split_chunk(batch: dict, batch_idx: int, is_last: bool) -> Iterator[tuple[dict, int, bool]]:
    """The batches of a chunk as ``(float batch, index in the epoch, ends the epoch)``, one at a time.

    Each batch is turned into float pixels (and dynamically binarized with its own seed) only when it
    is reached, so a chunk of large images holds its batches as uint8 until then. A plain batch (from a
    loader other than aelab's) is one batch: ``batch_idx`` and ``is_last`` as Lightning gives them.
    """
    info = batch.get(CHUNK) if isinstance(batch, dict) else None
    if info is None:
        yield batch, batch_idx, is_last
        return
    from aelab.data.datamodule import to_float_batch

    tensors = {k: v for k, v in batch.items() if k != CHUNK}
    parts = {k: v.split(info["sizes"]) for k, v in tensors.items()}
    seeds = info.get("binarize_seeds")
    count = len(info["sizes"])
    for i in range(count):
        part = {k: v[i] for k, v in parts.items()}
        generator = None
        if seeds is not None:
            generator = torch.Generator(device=part["image"].device).manual_seed(seeds[i])
        yield (
            to_float_batch(part, dynamic_binarize=seeds is not None, generator=generator),
            info["first"] + i,
            info["last"] and i == count - 1,
        )


def chunk_length(batch: Any) -> int:
    """How many batches a training batch holds (1 unless it is a chunk)."""
    info = batch.get(CHUNK) if isinstance(batch, dict) else None
    return 1 if info is None else len(info["sizes"])


# The Trainer's batch-unit settings as the user gave them, kept when they are translated into calls (a Trainer
# that fits again, or reloads its training loader, translates from these again).
_GIVEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def batch_units(trainer, num_batches: int, size: int) -> tuple[int, int | None]:
    """``(batches trained per epoch, validation every so many batches or None)`` from the Trainer's
    ``limit_train_batches`` and ``val_check_interval`` (in batches), which are then set in calls of ``size``
    batches for Lightning, which counts calls: the same epochs, validations and progress as one batch a call."""
    given = _GIVEN.setdefault(trainer, (trainer.limit_train_batches, trainer.val_check_interval))
    limit, interval = given
    if isinstance(limit, int):
        limit_batches = min(num_batches, limit)
    else:
        limit_batches = int(num_batches * float(limit))
        if limit_batches == 0 and float(limit) > 0:
            raise ConfigError(
                f"trainer.limit_train_batches={limit} of {num_batches} training batches is less than one batch: "
                f"use at least {1 / num_batches:.4g}"
            )
    every = None
    if getattr(trainer, "_val_check_time_interval", None) is None and interval is not None:
        if isinstance(interval, int):
            every = int(interval)
            if every > limit_batches and trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches:
                raise ConfigError(
                    f"trainer.val_check_interval={every} is more than the {limit_batches} training batches of an "
                    "epoch: lower it, or set trainer.check_val_every_n_epoch=null to count batches across epochs"
                )
        elif float(interval) < 1.0:
            every = max(1, int(limit_batches * float(interval)))
    if every is not None and trainer.check_val_every_n_epoch is None and size > 1 and limit_batches % every:
        raise ConfigError(
            f"trainer.check_val_every_n_epoch=null validates every {every} batches across epochs, which does not "
            f"divide the {limit_batches} batches of an epoch: with steps_per_call={size} validation points must "
            "fall at the same place in every epoch (make val_check_interval divide the epoch, or steps_per_call=1)"
        )
    if isinstance(limit, float) and float(limit) != 1.0:
        trainer.limit_train_batches = 1.0  # the sampler yields only the limited batches
    if every is not None:  # each interval of `every` batches is this many calls
        trainer.val_check_interval = calls_per_interval(limit_batches, size, every)
    return limit_batches, every
