"""Identical rows in a stream: count them, and keep, drop or refuse them (`stream.duplicates`).

A row repeats when its (x, y) equals an earlier row of the same split. In
`test.parquet` a recurring task's rows legitimately appear under each of its
experiences (DESIGN.md), so there the experience is part of the key. Rows of
`test.parquet` whose features also occur in `train.parquet` are leakage: they
inflate accuracy, and are reported (never dropped: the test set is the benchmark's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from clflow.errors import StreamError
from clflow.streams.schema import Split, Stream

log = logging.getLogger("clflow.streams")
Policy = Literal["keep", "drop", "error"]


def _row_keys(X: np.ndarray, *cols: np.ndarray) -> np.ndarray:
    """One opaque, hashable key per row: the bytes of its features and the given int columns."""
    parts = [np.ascontiguousarray(X, dtype=np.float32).view(np.uint8).reshape(len(X), -1)]
    parts += [
        np.ascontiguousarray(c, dtype=np.int64).view(np.uint8).reshape(len(X), -1) for c in cols
    ]
    rows = np.ascontiguousarray(np.concatenate(parts, axis=1))
    return rows.view(np.dtype((np.void, rows.shape[1]))).ravel()


def repeat_mask(split: Split, by_experience: bool = False) -> np.ndarray:
    """True for each row identical to an earlier row of the split."""
    if not len(split):
        return np.zeros(0, dtype=bool)
    cols = (split.y, split.experience) if by_experience else (split.y,)
    _, first = np.unique(_row_keys(split.X, *cols), return_index=True)
    mask = np.ones(len(split), dtype=bool)
    mask[first] = False
    return mask


def leaked_rows(train: Split, test: Split) -> int:
    """Test rows whose features also occur among the training rows."""
    return int(np.isin(_row_keys(test.X), _row_keys(train.X)).sum())


@dataclass(frozen=True)
class DuplicateReport:
    train: int  # training rows repeating an earlier training row
    test: int  # test rows repeating an earlier test row of the same experience
    test_in_train: int  # test rows whose features occur in train (leakage)
    policy: Policy
    dropped: int = 0

    def to_dict(self) -> dict:
        return {
            "train": self.train,
            "test": self.test,
            "test_in_train": self.test_in_train,
            "policy": self.policy,
            "dropped": self.dropped,
        }


def apply_policy(stream: Stream, policy: Policy, where: str) -> tuple[Stream, DuplicateReport]:
    """Count repeats and leakage; keep them, drop later repeats, or stop (naming `where`)."""
    train_rep, test_rep = repeat_mask(stream.train), repeat_mask(stream.test, by_experience=True)
    n_train, n_test = int(train_rep.sum()), int(test_rep.sum())
    if policy == "error" and (n_train or n_test):
        split, mask = ("train", train_rep) if n_train else ("test", test_rep)
        raise StreamError(
            f"{n_train + n_test} duplicate rows ({split} split, "
            f"first at row {int(np.argmax(mask))}); "
            "set stream.duplicates to keep or drop",
            file=where,
            field="x",
        )
    if policy == "drop" and (n_train or n_test):
        n_exp = stream.n_experiences
        stream = replace(
            stream, train=stream.train.select(~train_rep), test=stream.test.select(~test_rep)
        )
        for name, split in (("train", stream.train), ("test", stream.test)):
            empty = sorted(set(range(n_exp)) - set(np.unique(split.experience).tolist()))
            if empty:
                raise StreamError(
                    f"dropping duplicates leaves experience {empty[0]} with no {name} rows",
                    file=where,
                    field="stream.duplicates",
                )
    leak = leaked_rows(stream.train, stream.test)
    report = DuplicateReport(
        n_train, n_test, leak, policy, (n_train + n_test) if policy == "drop" else 0
    )
    if n_train or n_test:
        log.info(
            "%s: %d repeated training rows, %d repeated test rows (%s)",
            where,
            n_train,
            n_test,
            "dropped" if policy == "drop" else "kept",
        )
    if leak:
        log.warning(
            "%s: %d test rows also occur in the training rows: leakage inflates accuracy",
            where,
            leak,
        )
    return stream, report
