"""Checkpoint files: written atomically, read back with a clear error when damaged."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clflow.errors import ClflowError
from clflow.io import atomic_path

FORMAT = "clflow-checkpoint/1"


class CheckpointError(ClflowError):
    """A checkpoint that cannot be read (truncated, corrupt, wrong format)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` to a temp file, then rename it onto `path`."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint.

    It holds numpy arrays and plain Python state besides tensors, so it is loaded
    with weights_only=False: load only checkpoints this project wrote.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError("file not found", file=path)
    try:
        data = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"truncated or corrupt checkpoint ({type(exc).__name__})", file=path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"not a {FORMAT} file", file=path, field="format")
    return data


def rows_hash(X: np.ndarray, y: np.ndarray) -> str:
    """Hash of training rows in order: proves a checkpoint consumed exactly these rows."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()
