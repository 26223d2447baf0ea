"""Input scaling that travels with the stream and lives inside every model.

`stream.normalize: standard` fits a per-feature mean and std on the first
experience's training rows only (a continual learner cannot know later data),
stores them in the stream's `meta.json`, and every model built on the stream
applies them as its first layer: models, the served one included, take raw features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

NormalizeKind = Literal["none", "standard"]


@dataclass(frozen=True)
class Normalizer:
    """x -> (x - mean) / std, per feature."""

    mean: np.ndarray  # (d,) float32
    std: np.ndarray  # (d,) float32, > 0

    @classmethod
    def fit(cls, X: np.ndarray) -> Normalizer:
        """Fit on X; a feature's std is floored at the median std of the features.

        Why the floor: the first experience need not show a feature's range (a pixel
        that a class never lights up has a std near 0 there, and 16 or 255 later would
        land hundreds of units out). The floor never amplifies a feature beyond the
        typical feature's scale; measured on Split-Digits in the README.
        """
        X = np.asarray(X, dtype=np.float64)
        mean, std = X.mean(0), X.std(0)
        varying = std > 1e-6 * max(float(np.abs(X).max()), 1.0)
        floor = float(np.median(std[varying])) if varying.any() else 1.0
        return cls(mean.astype(np.float32), np.maximum(std, floor).astype(np.float32))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": "standard", "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalizer | None:
        if not d or d.get("kind") == "none":
            return None
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


def fit_normalizer(kind: NormalizeKind, X_first: np.ndarray) -> Normalizer | None:
    """The normalizer `stream.normalize` asks for, fitted on the first experience's training
    rows."""
    return Normalizer.fit(X_first) if kind == "standard" else None
