"""Checkpoints: atomic writes, loads that never unpickle code, errors that name the problem."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "fpmd_core.checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "config", "task_spec", "agent", "counters", "rng")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or does not match what is expected."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves
    a half-written checkpoint under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or truncated files
        raise CheckpointError(
            f"checkpoint {path}: cannot be read (corrupt, truncated or not a checkpoint): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an fpmd_core checkpoint "
                              f"(expected format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path}: version {payload.get('version')!r}, "
                              f"expected {VERSION}")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing entries {missing}")
    return payload


def check_matches(payload: dict, path: str | Path, **expected) -> None:
    """Compare task-spec fields (obs_dim, act_dim, id, ...) with what the caller expects."""
    spec = payload["task_spec"]
    for key, value in expected.items():
        if spec.get(key) != value:
            raise CheckpointError(f"checkpoint {path}: {key} is {spec.get(key)!r}, "
                                  f"expected {value!r}")
