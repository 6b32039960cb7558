"""Reads an offline W&B run (`run-*.wandb`): LevelDB's log format of `Record` protobufs after a 7-byte
header. W&B ships no Python reader, so the tests decode the file the way `wandb sync` does."""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, HEADER = 32768, 7


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pieces = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # a block's tail too short for a header is padding
            position += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[position + 4: position + 7])
        if kind == 0 and length == 0:
            break
        pieces += data[position + HEADER: position + HEADER + length]
        position += HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def read_run(path: Path) -> dict:
    """The run's job_type, config, history rows, summary, metric definitions and artifacts."""
    run = {"job_type": None, "config": {}, "history": [], "summary": {}, "metrics": {}, "artifacts": []}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["job_type"] = record.run.job_type
            run["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            run["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update})
        elif kind == "metric":
            run["metrics"][record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "artifact":
            run["artifacts"].append({"name": record.artifact.name, "type": record.artifact.type,
                                     "files": [m.path for m in record.artifact.manifest.contents]})
    return run
