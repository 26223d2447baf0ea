"""Strategy plugins (Avalanche-style): hooks around each training step."""

from __future__ import annotations

import numpy as np


class ReservoirBuffer:
    """Uniform random sample of every distinct example seen (reservoir sampling, Vitter's R).

    Repeated presentations of one example (several epochs) count once, so the
    buffer stays uniform over the data rather than over presentations.
    """

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.X: np.ndarray | None = None
        self.y = np.empty(0, dtype=np.int64)
        self.n_seen = 0
        self._keys: list[bytes] = []
        self._known: set[bytes] = set()

    def __len__(self) -> int:
        return len(self.y)

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        for x_i, y_i in zip(X, y):
            key = x_i.tobytes() + int(y_i).to_bytes(8, "little", signed=True)
            if key in self._known:
                continue
            self._known.add(key)
            self.n_seen += 1
            if len(self.y) < self.capacity:
                self.X = x_i[None].copy() if self.X is None else np.concatenate([self.X, x_i[None]])
                self.y = np.append(self.y, y_i)
                self._keys.append(key)
            else:
                j = int(self.rng.integers(self.n_seen))
                if j < self.capacity:
                    self.X[j], self.y[j], self._keys[j] = x_i, y_i, key  # type: ignore[index]

    def get_state(self) -> dict:
        return {
            "X": self.X,
            "y": self.y,
            "n_seen": self.n_seen,
            "keys": list(self._keys),
            "known": sorted(self._known),
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict) -> ReservoirBuffer:
        self.X, self.y, self.n_seen = (
            state["X"],
            np.asarray(state["y"], dtype=np.int64),
            int(state["n_seen"]),
        )
        self._keys, self._known = list(state["keys"]), set(state["known"])
        self.rng.bit_generator.state = state["rng"]
        return self

    def absorb(self, other: ReservoirBuffer) -> None:
        """Fold another buffer's samples in (pruning), keeping this buffer's capacity."""
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
