"""Checkpoint files: plain data and tensors, loaded without running code.

A checkpoint holds tensors, numpy arrays (stored as tagged tensors) and plain
Python values (dict, list, tuple, set, str, bytes, numbers, None); never pickled
objects. It is read with `torch.load(weights_only=True)`, so a checkpoint from an
untrusted place (a registry artifact) cannot run code. Written atomically; a
damaged, foreign or old-format file is one readable line.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clflow.errors import ClflowError
from clflow.util.io import atomic_path

FORMAT = "clflow-checkpoint/2"
_ARRAY = "__ndarray__"


class CheckpointError(ClflowError):
    """A checkpoint that cannot be read (truncated, corrupt, wrong format)."""


def to_plain(obj: Any) -> Any:
    """`obj` as tensors and plain values; numpy arrays become {"__ndarray__": tensor}."""
    if isinstance(obj, np.ndarray):
        return {_ARRAY: torch.from_numpy(np.array(obj, copy=True))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return (
            type(obj)((k, to_plain(v)) for k, v in obj.items())
            if isinstance(obj, OrderedDict)
            else {k: to_plain(v) for k, v in obj.items()}
        )
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if obj is None or isinstance(obj, (torch.Tensor, str, bytes, bool, int, float, set, frozenset)):
        return obj
    raise TypeError(f"a checkpoint holds plain data and tensors, not {type(obj).__name__}")


def from_plain(obj: Any) -> Any:
    """The inverse of to_plain: tagged tensors become numpy arrays again."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _ARRAY in obj:
            return obj[_ARRAY].numpy()
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` (plain data, see to_plain) to a temp file, then rename it onto `path`.

    The same payload always gives the same bytes, so DVC sees an unchanged out as unchanged.
    """
    buf = (
        io.BytesIO()
    )  # not torch.save(tmp): it names the zip's folder after the (random) temp file
    torch.save({"format": FORMAT, **to_plain(payload)}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint, without unpickling any object."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("file not found", file=path)
    try:
        data = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise CheckpointError(
                "holds pickled objects (an older clflow format, or not clflow's): it is not "
                "loaded, since that could run code; delete it to retrain",
                file=path,
            ) from None
        raise CheckpointError(
            f"truncated or corrupt checkpoint ({type(exc).__name__})", file=path
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise CheckpointError(
            f"not a {FORMAT} file (format {found!r}); delete it to retrain",
            file=path,
            field="format",
        )
    return from_plain(data)


def rows_hash(X: np.ndarray, y: np.ndarray) -> str:
    """Hash of training rows in order: proves a checkpoint consumed exactly these rows."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()
