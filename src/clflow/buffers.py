"""Storage policies (Avalanche's `storage_policy.py`): what a method keeps of the stream, in
O(capacity) memory. The replay plugins (plugins.py), GDumb and TAME's experts keep their rows in
these."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def memory_held(buffers: Iterable[ReservoirBuffer | BalancedBuffer]) -> dict[str, int]:
    """The rows some buffers hold and the bytes they take (features, labels, sampling
    priorities and stored logits): a method's memory, as every method reports it."""
    buffers = list(buffers)
    return {
        "memory_rows": sum(len(b) for b in buffers),
        "memory_bytes": sum(b.nbytes for b in buffers),
    }


class ReservoirBuffer:
    """A uniform random sample of the distinct examples seen, in O(capacity) memory.

    Bottom-k sampling: every distinct example gets a pseudo-random priority, a keyed
    64-bit hash of its bytes (features and label), and the buffer keeps the `capacity`
    examples of lowest priority. That is a uniform sample without replacement of the
    distinct examples seen (each set of `capacity` is equally likely over seeds), and
    repeated presentations of one example (several epochs, a recurring task) count once
    with no record of the past: an example seen again has the priority it had, so it is
    either still held or still below the cut. Only the held rows and their priorities
    are stored (and checkpointed), never the keys of everything seen; the sample is the
    same whatever the order of the data.
    """

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.seed = seed
        self.rng = np.random.default_rng(seed)  # draws rehearsal batches only
        self.X: np.ndarray | None = None
        self.y = np.empty(0, dtype=np.int64)
        self.priority = np.empty(0, dtype=np.uint64)
        self.extra: np.ndarray | None = None  # a payload per row (DER's logits), kept with it

    def __len__(self) -> int:
        return len(self.y)

    @property
    def nbytes(self) -> int:
        """Bytes held: rows, labels, priorities and any payload."""
        arrays = (self.X, self.y, self.priority, self.extra)
        return sum(a.nbytes for a in arrays if a is not None)

    def priorities(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each row's priority: blake2b of its bytes and label, keyed by the seed."""
        key = self.seed.to_bytes(8, "little", signed=True)
        X = np.ascontiguousarray(X)
        return np.array(
            [
                int.from_bytes(
                    hashlib.blake2b(
                        x_i.tobytes() + int(y_i).to_bytes(8, "little", signed=True),
                        digest_size=8,
                        key=key,
                    ).digest(),
                    "little",
                )
                for x_i, y_i in zip(X, y)
            ],
            dtype=np.uint64,
        )

    def add(self, X: np.ndarray, y: np.ndarray, extra: np.ndarray | None = None) -> None:
        """Offer rows (with a payload row each when the buffer keeps one)."""
        if not len(y):
            return
        y = np.asarray(y, dtype=np.int64)
        prio = self.priorities(X, y)
        if self.X is not None:
            X, y = np.concatenate([self.X, X]), np.concatenate([self.y, y])
            prio = np.concatenate([self.priority, prio])
            if extra is not None:
                extra = np.concatenate([self.extra, extra])
        # one row per priority (a repeat of a held or a new example), lowest first; of repeats
        # the newest, so a payload is the latest one (DER's logits from the last epoch over a
        # row, not from before the model had learned its class)
        prio, last = np.unique(prio[::-1], return_index=True)
        keep = (len(y) - 1 - last)[: self.capacity]
        self.X, self.y, self.priority = X[keep].copy(), y[keep], prio[: self.capacity]
        self.extra = None if extra is None else extra[keep].copy()

    def get_state(self) -> dict:
        return {
            "X": self.X,
            "y": self.y,
            "priority": self.priority.view(np.int64),  # torch stores no uint64 arrays
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict) -> ReservoirBuffer:
        self.X = state["X"]
        self.y = np.asarray(state["y"], dtype=np.int64)
        self.priority = np.asarray(state["priority"], dtype=np.int64).view(np.uint64)
        self.rng.bit_generator.state = state["rng"]
        return self

    def absorb(self, other: ReservoirBuffer) -> None:
        """Fold another buffer's samples in (spurious-expert removal), keeping this capacity."""
        if other.X is not None:
            self.add(other.X, other.y)

    def sample_index(self, n: int) -> np.ndarray:
        """Positions of up to n stored examples, drawn without replacement."""
        if not len(self.y):
            raise ValueError("empty buffer")
        return self.rng.choice(len(self.y), size=min(n, len(self.y)), replace=False)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to n stored examples, drawn without replacement."""
        idx = self.sample_index(n)
        return self.X[idx], self.y[idx]  # type: ignore[index]


class BalancedBuffer:
    """Groups of rows sharing the capacity evenly (Avalanche's BalancedExemplarsBuffer, adaptive
    size): with k groups each holds capacity // k rows (the first capacity % k one more).

    Every row gets a random priority when it is added and a group keeps its rows of lowest
    priority, so a group is a uniform random subset of all the rows ever added to it, and
    shrinking keeps a subset of what it held (Avalanche's weight-ordered reservoir groups).
    A row may carry a payload (DER's logits), kept with it.
    """

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # key -> (rows, labels, priorities, payloads or None)
        self.groups: dict[int, tuple[np.ndarray, ...]] = {}
        self.X: np.ndarray | None = None  # the groups joined; rebuilt when rows arrive
        self.y = np.empty(0, dtype=np.int64)
        self.extra: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def nbytes(self) -> int:
        """Bytes held: rows, labels, priorities and payloads of every group."""
        return sum(a.nbytes for group in self.groups.values() for a in group if a is not None)

    def group_sizes(self, n_groups: int) -> list[int]:
        sizes = [self.capacity // n_groups] * n_groups
        for i in range(self.capacity - sum(sizes)):
            sizes[i] += 1
        return sizes

    def add_groups(self, parts: dict[int, tuple[np.ndarray, ...]]) -> None:
        """Add (rows, labels[, payloads]) to groups, new or existing, then resize every group
        once."""
        for key, (X, y, *extra) in parts.items():
            group = (X, np.asarray(y, dtype=np.int64), self.rng.random(len(y)), *extra, None)[:4]
            if key in self.groups:
                old = self.groups[key]
                group = tuple(
                    None if a is None else np.concatenate([a, b]) for a, b in zip(old, group)
                )
            self.groups[key] = group
        sizes = self.group_sizes(len(self.groups))
        for (key, group), n in zip(list(self.groups.items()), sizes):
            keep = np.sort(np.argsort(group[2], kind="stable")[:n])
            self.groups[key] = tuple(None if a is None else a[keep].copy() for a in group)
        parts_of = lambda i: [g[i] for g in self.groups.values()]  # noqa: E731
        self.X, self.y = np.concatenate(parts_of(0)), np.concatenate(parts_of(1))
        extra = parts_of(3)
        self.extra = None if extra[0] is None else np.concatenate(extra)

    def sample_index(self, n: int) -> np.ndarray:
        """Positions of up to n stored examples, drawn without replacement."""
        if not len(self):
            raise ValueError("empty buffer")
        return self.rng.choice(len(self.y), size=min(n, len(self.y)), replace=False)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to n stored examples, drawn without replacement."""
        idx = self.sample_index(n)
        return self.X[idx], self.y[idx]  # type: ignore[index]


class ExperienceBalancedBuffer(BalancedBuffer):
    """A buffer of past experiences split evenly among them (Avalanche's
    ExperienceBalancedBuffer, adaptive size)."""

    def add_experience(self, X: np.ndarray, y: np.ndarray) -> None:
        self.add_groups({len(self.groups): (X, y)})


class ClassBalancedBuffer(BalancedBuffer):
    """A buffer split evenly among the classes seen (Avalanche's ClassBalancedBuffer, adaptive
    size; GDumb's balanced memory)."""

    def add_classes(self, X: np.ndarray, y: np.ndarray, extra: np.ndarray | None = None) -> None:
        """Add rows (and a payload each) to their classes' groups."""
        self.add_groups(
            {
                int(c): (X[y == c], y[y == c], *([] if extra is None else [extra[y == c]]))
                for c in np.unique(y)
            }
        )
