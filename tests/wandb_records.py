"""Read an offline W&B run's `.wandb` file back (LevelDB log framing of protobuf `Record`s).

wandb ≥ 0.19 dropped its Python reader of this format; the framing is small enough to read here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

HEADER = 7  # b":W&B", 2-byte magic, 1-byte version
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
        elif kind == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
    parsed = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(path: Path, timeout: float = 30.0) -> list[pb.Record]:
    """The records once the run's `exit` record is on disk: wandb-core may still be flushing after finish()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            records = read_records(path)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return records
        except (AssertionError, DecodeError):  # an empty file or a half-written record does not parse yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path}: no complete offline W&B run after {timeout}s")


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """The run's name/group/job type, config, history rows and final summary from its offline files."""
    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run under {run_dir}"
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}}
    for record in finished_records(files[-1]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out |= {"name": record.run.display_name, "group": record.run.run_group, "job_type": record.run.job_type}
            out["config"] |= {_key(i): json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            out["config"] |= {_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"] |= {_key(i): json.loads(i.value_json) for i in record.summary.update}
    return out
