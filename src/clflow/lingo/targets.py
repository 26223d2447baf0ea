"""Frozen class targets: sentence embeddings of class names (LingoCL, Ni et al. 2024), or random
controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from clflow.errors import ClflowError
from clflow.sentence import default_encoder_path, load_encoder

__all__ = [
    "default_encoder_path",
    "encode_names",
    "load_encoder",
    "random_targets",
    "read_targets",
]


def prompts(names: list[str], template: str) -> list[str]:
    if "{name}" not in template:
        raise ClflowError("template must contain {name}", field="lingo.template")
    return [template.format(name=n) for n in names]


def encode_names(names: list[str], template: str, encoder) -> np.ndarray:
    """L2-normalised embeddings, one name at a time so a class's target never depends on the
    others."""
    if not names or len(set(names)) != len(names):
        raise ClflowError("class names must be non-empty and distinct", field="classes")
    rows = [
        encoder.encode([p], normalize_embeddings=True, convert_to_numpy=True)[0]
        for p in prompts(names, template)
    ]
    return np.asarray(rows, dtype=np.float32)


def random_targets(n: int, dim: int, seed: int) -> np.ndarray:
    """The control: frozen random unit vectors (frozen, but with no language structure)."""
    T = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return T / np.linalg.norm(T, axis=1, keepdims=True)


def targets_frame(names: list[str], template: str, T: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "label": np.arange(len(names), dtype=np.int64),
            "name": names,
            "prompt": prompts(names, template),
            "target": pl.Series("target", T).cast(pl.List(pl.Float32)),
        }
    )


def read_targets(path: str | Path, classes: list[str]) -> np.ndarray:
    """Targets for `classes` (label order), checking that the names match the stream's
    classes.json."""
    path = Path(path)
    if not path.exists():
        raise ClflowError("file not found (run the embed_classes stage)", file=path)
    df = pl.read_parquet(path).sort("label")
    names = df["name"].to_list()
    if names != list(classes):
        raise ClflowError(
            f"class names {names} do not match the stream's classes.json {list(classes)}",
            file=path,
            field="name",
        )
    return np.stack(df["target"].to_list()).astype(np.float32)


def target_stats(targets: np.ndarray) -> dict[str, float]:
    """How far apart the class targets are: count, dimension, mean pairwise cosine."""
    n = len(targets)
    cos = targets @ targets.T
    return {
        "n_classes": n,
        "dim": targets.shape[1],
        "mean_pairwise_cosine": float(cos[np.triu_indices(n, 1)].mean()) if n > 1 else 1.0,
    }
