"""A demo experience: a genuine distribution shift made from the stream's own rows."""

from __future__ import annotations

import numpy as np
import polars as pl

from clflow.errors import StreamError
from clflow.streams.schema import (
    Stream,
)


def example_experience(
    stream: Stream, *, rotate: float = 0.0, permute: bool = False, seed: int = 0, limit: int = 0
) -> pl.DataFrame:
    """A new-domain experience drawn from the stream's own rows (every class), for demos and tests.

    The rows are rotated (image streams) or pixel-permuted, so the experience is a
    genuine distribution shift with the stream's labels.
    """
    from clflow.streams.builders import permutation
    from clflow.streams.builders import rotate as rotate_images

    X = np.concatenate([stream.train.X, stream.test.X])
    y = np.concatenate([stream.train.y, stream.test.y])
    rows = np.random.default_rng(seed).permutation(len(y))[: limit or None]
    X, y = X[rows], y[rows]
    if rotate:
        if not stream.shape:
            raise StreamError("rotation needs the image shape (meta.json)", field="rotate")
        X = rotate_images(X, stream.shape, rotate)
    if permute:
        X = X[:, permutation(seed + 1, X.shape[1], seed)]
    keep = (
        ~pl.DataFrame({"x": X.tolist(), "y": y}).is_duplicated().to_numpy()
    )  # rotation can merge rows
    return pl.DataFrame(
        {"x": pl.Series("x", X[keep]).cast(pl.List(pl.Float32)), "y": pl.Series(y[keep])}
    )
