"""Read an offline W&B run folder (``offline-run-*/run-*.wandb``) the way ``wandb sync`` would.

The ``.wandb`` file is a LevelDB-style log of protobuf records: a 7-byte
header, then 32 KiB blocks of chunks (crc32, length, type).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            break
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            buf = chunk
        elif kind == MIDDLE:
            buf += chunk
        elif kind == LAST:
            out.append(buf + chunk)
            buf = b""
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_folder: Path, wait_s: float = 30.0) -> dict:
    """Parse one ``offline-run-*`` folder into run info, config, history rows, summary and media.

    W&B's service process may still be flushing the log when ``finish()`` has
    returned on a loaded machine: re-read until the exit record is there (or
    ``wait_s`` has passed).
    """
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = _parse_offline_run(Path(run_folder))
            if info["exit_code"] is not None or time.monotonic() > deadline:
                return info
        except DecodeError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _parse_offline_run(run_folder: Path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = run_folder.glob("run-*.wandb")
    info: dict = {"history": [], "config": {}, "summary": {}, "exit_code": None}
    for raw in _records(log_file):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            info.update(
                run_id=rec.run.run_id,
                group=rec.run.run_group,
                job_type=rec.run.job_type,
                tags=list(rec.run.tags),
                name=rec.run.display_name,
                project=rec.run.project,
            )
        elif kind == "config":
            for item in rec.config.update:
                info["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            info["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                info["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            info["exit_code"] = rec.exit.exit_code
    info["media"] = sorted(str(p.relative_to(run_folder)) for p in (run_folder / "files" / "media").rglob("*.png"))
    return info


def offline_runs(run_dir: Path) -> list[Path]:
    """The offline W&B run folders under a run folder (those that hold a run log)."""
    return sorted(p for p in (Path(run_dir) / "wandb").glob("offline-run-*") if any(p.glob("run-*.wandb")))
