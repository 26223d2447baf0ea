"""Build continual-learning streams (class- and domain-incremental) from a data set."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clflow.errors import ConfigError
from clflow.streams.loaders import (
    RawData,
    load_cifar10,
    load_digits,
    load_idx_dataset,
    load_mnist1d,
)
from clflow.streams.normalize import NormalizeKind, fit_normalizer
from clflow.streams.schema import Split, Stream, load_stream
from clflow.streams.sources import DOMAIN_SOURCES
from clflow.streams.text import Embed, load_text_stream

if TYPE_CHECKING:  # a type only: streams do not import clflow.config (see clflow.util.codedeps)
    from clflow.config import StreamConfig


def raw_data(cfg: StreamConfig) -> RawData:
    """The labelled source data named by `stream.source`."""
    if cfg.source in ("digits", "permuted_digits", "rotated_digits"):
        data = load_digits(cfg.test_size, cfg.seed)
    elif cfg.source in ("mnist1d", "permuted_mnist1d"):
        data = load_mnist1d(cfg.test_size)
    elif cfg.source in ("mnist", "fashion_mnist"):
        data = load_idx_dataset(cfg.path, fashion=cfg.source == "fashion_mnist")
    elif cfg.source == "cifar10":
        data = load_cifar10(cfg.path)
    else:
        raise ValueError(f"no raw data for source {cfg.source!r}")
    return _limit(data, cfg.limit, cfg.seed) if cfg.limit else data


def _limit(data: RawData, limit: int, seed: int) -> RawData:
    rng = np.random.default_rng(seed)
    n_test = max(1, round(limit * len(data.y_test) / (len(data.y_train) + len(data.y_test))))
    tr = rng.permutation(len(data.y_train))[: limit - n_test]
    te = rng.permutation(len(data.y_test))[:n_test]
    return RawData(
        data.X_train[tr],
        data.y_train[tr],
        data.X_test[te],
        data.y_test[te],
        data.classes,
        data.shape,
    )


def _assemble(parts: list[tuple[np.ndarray, np.ndarray, int]]) -> Split:
    """Stack (X, y, task) parts in experience order into one Split."""
    X = np.concatenate([p[0] for p in parts]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    exp = np.concatenate([np.full(len(p[1]), e, np.int32) for e, p in enumerate(parts)])
    task = np.concatenate([np.full(len(p[1]), p[2], np.int32) for p in parts])
    return Split(X, y, exp, task)


class EmptyExperience(ValueError):
    """An experience without training or test rows (too small a `stream.limit`, or source)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _check_parts(parts: list[tuple[np.ndarray, np.ndarray, int]], split: str, limit: int) -> None:
    empty = [e for e, p in enumerate(parts) if not len(p[1])]
    if empty:
        hint = f": stream.limit {limit} is too small (0 = all rows)" if limit else ""
        raise EmptyExperience(
            f"experience {empty[0]} would have no {split} rows{hint}",
            "stream.limit" if limit else "stream",
        )


Pool = Callable[[int], np.ndarray]
Transform = Callable[[np.ndarray, int], np.ndarray]


def _task_stream(
    data: RawData, cfg: StreamConfig, train_pool: Pool, test_pool: Pool, transform: Transform
) -> Stream:
    """One experience per entry of the task sequence.

    A recurring task gets a fresh disjoint chunk of its training rows at each
    occurrence, and the task's full test rows.
    """
    tasks = cfg.task_sequence()
    rng = np.random.default_rng(cfg.seed + 1)
    chunks = {
        t: np.array_split(rng.permutation(train_pool(t)), tasks.count(t))
        for t in sorted(set(tasks))
    }
    seen = dict.fromkeys(chunks, 0)
    train_parts, test_parts = [], []
    for t in tasks:
        rows = chunks[t][seen[t]]
        seen[t] += 1
        train_parts.append((transform(data.X_train[rows], t), data.y_train[rows], t))
        te = test_pool(t)
        test_parts.append((transform(data.X_test[te], t), data.y_test[te], t))
    _check_parts(train_parts, "training", cfg.limit)
    _check_parts(test_parts, "test", cfg.limit)
    return Stream(_assemble(train_parts), _assemble(test_parts), list(data.classes), data.shape)


def class_groups(n_classes: int, n_groups: int, seed: int) -> list[np.ndarray]:
    """Partition the classes into `n_groups` disjoint groups, in a seeded order."""
    if n_groups > n_classes:
        raise ValueError(f"{n_groups} experiences need at least as many classes, have {n_classes}")
    order = np.random.default_rng(seed).permutation(n_classes)
    return [np.sort(g) for g in np.array_split(order, n_groups)]


def class_incremental(data: RawData, cfg: StreamConfig) -> Stream:
    """Each task is a group of classes (Split-Digits, Split-MNIST, ...)."""
    groups = class_groups(len(data.classes), cfg.experiences, cfg.seed)
    return _task_stream(
        data,
        cfg,
        train_pool=lambda t: np.flatnonzero(np.isin(data.y_train, groups[t])),
        test_pool=lambda t: np.flatnonzero(np.isin(data.y_test, groups[t])),
        transform=lambda X, t: X,
    )


def permutation(task: int, n_features: int, seed: int) -> np.ndarray:
    """Fixed pixel permutation of a task; task 0 keeps the original order."""
    if task == 0:
        return np.arange(n_features)
    return np.random.default_rng([seed, task]).permutation(n_features)


def rotate(X: np.ndarray, shape: tuple[int, ...], degrees: float) -> np.ndarray:
    """Rotate flattened images by `degrees` about their centre (bilinear, zero fill)."""
    from scipy.ndimage import rotate as nd_rotate

    if degrees == 0:
        return X
    imgs = X.reshape(len(X), *shape)
    out = nd_rotate(imgs, degrees, axes=(-1, -2), reshape=False, order=1, mode="constant", cval=0.0)
    return out.reshape(len(X), -1).astype(np.float32)


def domain_incremental(data: RawData, cfg: StreamConfig) -> Stream:
    """All classes in every task; each task applies its own fixed input transform."""
    if cfg.source in ("permuted_digits", "permuted_mnist1d"):
        transform: Transform = lambda X, t: X[:, permutation(t, X.shape[1], cfg.seed)]  # noqa: E731
    else:
        transform = lambda X, t: rotate(X, data.shape, t * cfg.rotation_step)  # noqa: E731
    every_row = lambda n: lambda t: np.arange(n)  # noqa: E731
    return _task_stream(
        data, cfg, every_row(len(data.y_train)), every_row(len(data.y_test)), transform
    )


def build_stream(cfg: StreamConfig, embed: Embed | None = None) -> Stream:
    """The stream described by the `stream` section of params.yaml, with its input normalizer.

    The normalizer is fitted on experience 0's training rows, which appended
    experiences never change: a continual update keeps the same scaling. A `text`
    source needs `embed` (texts -> feature rows, e.g. clflow.sentence.EmbeddingCache.embed).
    """
    if cfg.source == "parquet":
        stream = with_shape(load_stream(cfg.path), cfg)
    elif cfg.source == "text":
        if embed is None:
            raise ValueError("a text stream needs an encoder to embed its documents")
        stream = load_text_stream(cfg.path, embed, cfg.max_text_chars)
    else:
        data = raw_data(cfg)
        stream = (
            domain_incremental(data, cfg)
            if cfg.source in DOMAIN_SOURCES
            else class_incremental(data, cfg)
        )
    return with_normalizer(stream, cfg.normalize)


def with_shape(stream: Stream, cfg: StreamConfig) -> Stream:
    """A parquet stream with the shape `stream.shape` gives its rows (checked against them)."""
    if cfg.shape is None:
        return stream
    shape = tuple(cfg.shape)
    if math.prod(shape) != stream.n_features:
        raise ConfigError(
            f"{shape} holds {math.prod(shape)} values, the stream's rows {stream.n_features}",
            field="stream.shape",
        )
    if stream.shape and stream.shape != shape:
        raise ConfigError(
            f"{shape} differs from {list(stream.shape)} in {Path(cfg.path) / 'meta.json'}",
            field="stream.shape",
        )
    return replace(stream, shape=shape)


def with_normalizer(stream: Stream, kind: NormalizeKind) -> Stream:
    """The stream with the input normalizer `kind` fitted on experience 0's training rows."""
    first = stream.train.X[stream.train.experience == 0]
    return replace(stream, normalizer=fit_normalizer(kind, first))
