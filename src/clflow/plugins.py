"""Strategy plugins (Avalanche-style): hooks around each training step."""

from __future__ import annotations

import hashlib

import numpy as np


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

    def __len__(self) -> int:
        return len(self.y)

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

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        if not len(y):
            return
        y = np.asarray(y, dtype=np.int64)
        prio = self.priorities(X, y)
        if self.X is not None:
            X, y = np.concatenate([self.X, X]), np.concatenate([self.y, y])
            prio = np.concatenate([self.priority, prio])
        # one row per priority (a repeat of a held or a new example), lowest first
        prio, first = np.unique(prio, return_index=True)
        keep = first[: self.capacity]
        self.X, self.y, self.priority = X[keep].copy(), y[keep], prio[: self.capacity]

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

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to n stored examples, drawn without replacement."""
        if not len(self.y):
            raise ValueError("empty buffer")
        idx = self.rng.choice(len(self.y), size=min(n, len(self.y)), replace=False)
        return self.X[idx], self.y[idx]  # type: ignore[index]


class ExperienceBalancedBuffer:
    """A buffer of past experiences split evenly among them (Avalanche's ExperienceBalancedBuffer,
    adaptive size).

    Each experience keeps a uniform random subset of its rows. When experience k
    arrives every group shrinks to capacity // k rows (the first capacity % k groups
    keep one more), each keeping a subset of what it held, as Avalanche's
    weight-ordered reservoir groups do.
    """

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.groups: list[tuple[np.ndarray, np.ndarray]] = []
        self.X: np.ndarray | None = None  # the groups joined; rebuilt when an experience arrives
        self.y = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.y)

    def group_sizes(self, n_groups: int) -> list[int]:
        sizes = [self.capacity // n_groups] * n_groups
        for i in range(self.capacity - sum(sizes)):
            sizes[i] += 1
        return sizes

    def add_experience(self, X: np.ndarray, y: np.ndarray) -> None:
        order = self.rng.permutation(len(y))  # a uniform random order; a prefix is a uniform subset
        self.groups.append((X[order], y[order]))
        sizes = self.group_sizes(len(self.groups))
        self.groups = [(gx[:n].copy(), gy[:n].copy()) for (gx, gy), n in zip(self.groups, sizes)]
        self.X = np.concatenate([g[0] for g in self.groups])
        self.y = np.concatenate([g[1] for g in self.groups])

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to n stored examples, drawn without replacement."""
        if not len(self):
            raise ValueError("empty buffer")
        idx = self.rng.choice(len(self.y), size=min(n, len(self.y)), replace=False)
        return self.X[idx], self.y[idx]  # type: ignore[index]


class Plugin:
    """Base plugin: override the hooks you need."""

    def before_step(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return X, y

    def after_step(self, X: np.ndarray, y: np.ndarray) -> None:
        return None

    def after_experience(self, X: np.ndarray, y: np.ndarray) -> None:
        """Called with an experience's training rows when it ends (only by boundary-aware
        harnesses)."""
        return None


class _Rehearsal(Plugin):
    """Join each batch with as many samples drawn from `self.buffer` (all of it when smaller)."""

    buffer: ReservoirBuffer | ExperienceBalancedBuffer

    def before_step(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self.buffer):
            return X, y
        Xr, yr = self.buffer.sample(len(y))
        return np.concatenate([X, Xr]), np.concatenate([y, yr])


class ExperienceReplayPlugin(_Rehearsal):
    """Standard experience replay (Avalanche's `Replay` with its default storage policy).

    The buffer holds past experiences only and is updated when an experience ends;
    each training batch is joined by as many samples drawn from it.
    """

    def __init__(self, memory: int, seed: int = 0):
        self.buffer = ExperienceBalancedBuffer(memory, seed)

    def after_experience(self, X: np.ndarray, y: np.ndarray) -> None:
        self.buffer.add_experience(X, y)


class ReplayPlugin(_Rehearsal):
    """Online replay: each batch is joined by as many samples from a reservoir of every row seen.

    The reservoir is updated after every step, so it needs no experience boundary
    (the fair peer of TAME); but while experience i trains, its own rows already
    fill the buffer and old classes are rehearsed less than with ExperienceReplayPlugin.
    """

    def __init__(self, memory: int, seed: int = 0):
        self.buffer = ReservoirBuffer(memory, seed)

    def after_step(self, X: np.ndarray, y: np.ndarray) -> None:
        self.buffer.add(X, y)
