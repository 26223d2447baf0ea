"""Drift without labels: a window of served rows against the reference kept with the model.

The reference is what TAME keeps: its experts' buffers (a uniformly random sample of what each
expert learnt) and the selector's routing of them. It is split in two random halves, the *core*
and the *pool*. Three statistics of a window, each with its own p-value:
- `mmd2` (the report's `score`): the squared maximum mean discrepancy between the window and the
  core (Gaussian kernel, median-distance bandwidth), a two-sample test on the features; its null
  is drawn from windows of the same size resampled from the pool;
- `routing_shift`: the total-variation distance between the window's routing and the whole
  reference's, tested with a chi-square test of homogeneity on the counts;
- `new_task_share`: the share of rows farther from every reference row (FAISS, exact L2) than
  the 99th percentile of the reference rows' own leave-one-out distances: rows no expert has
  seen the like of. Its test is two tests of those distances against the reference's own: the
  count beyond the percentile (exact and distribution-free for rows exchangeable with the
  reference, so the percentile's sampling error counts) and Mann-Whitney's rank test (the whole
  distribution, not only its tail). Both are taken on the newest 5, 10, 25, ... rows as well as
  on the whole window, Bonferroni-adjusted, so an abrupt new task is seen before it fills it.
Drift is declared when the smallest p-value is at most `alpha / 3` (Bonferroni), so a window
of unshifted traffic raises a false alarm with probability at most about `alpha`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

STATISTICS = ("mmd2", "routing_shift", "new_task_share")
SCAN = (5, 10, 25, 50, 100, 200, 400)  # newest rows the new-task test also looks at alone


@dataclass
class DriftReport:
    """What a window of served rows shows against the reference (JSON: `as_dict`)."""

    drift: bool
    score: float  # the window's MMD² against the core
    p_value: float  # the smallest p-value, Bonferroni-adjusted (times 3, at most 1)
    new_task_share: float
    routing_shift: float
    window: int
    model_version: str | None = None
    p_values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)  # 6 significant digits: a p-value of 1e-40 stays one
        out["p_values"] = {k: float(f"{v:.6g}") for k, v in self.p_values.items()}
        return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in out.items()}


def _search(index, X: np.ndarray, k: int):
    """`index.search` on one thread: for a window's few rows OpenMP's start-up costs more than the
    search (measured: 9.5 ms against 0.65 ms a 50-row window on 2 cores)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(X, k)
    finally:
        faiss.omp_set_num_threads(threads)


def _sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


class DriftDetector:
    """Calibrated two-sample, routing and new-task tests of served windows against a reference.

    `fit(X, experts)` takes the reference rows and the expert each was routed to; `score(X,
    experts)` a window's rows and their routed experts. Null distributions are drawn per window
    size, once, and kept.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        n_null: int = 2000,
        quantile: float = 0.99,
        max_reference: int = 2000,
        seed: int = 0,
    ):
        self.alpha = alpha
        self.n_null = n_null
        self.quantile = quantile
        self.max_reference = max_reference
        self.seed = seed

    def fit(self, X: np.ndarray, experts: np.ndarray) -> DriftDetector:
        import faiss

        X = np.asarray(X, dtype=np.float32)
        experts = np.asarray(experts, dtype=np.int64)
        if len(X) < 20:
            raise ValueError(f"a reference of {len(X)} rows: at least 20 are needed")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(X))[: self.max_reference]
        half = len(order) // 2
        core, pool = order[:half], order[half:]
        self.core_ = X[core].astype(np.float64)
        self.pool_ = X[pool].astype(np.float64)
        # new-task distances use every reference row: each row's distance to its nearest other
        # row (leave one out) is exchangeable with a fresh row's distance to the nearest one
        self.index_ = faiss.IndexFlatL2(X.shape[1])
        self.index_.add(np.ascontiguousarray(X[order]))
        self.n_features_in_ = X.shape[1]
        found, _ = _search(self.index_, np.ascontiguousarray(X[order]), 2)
        held_out = np.sqrt(np.maximum(found[:, 1], 0.0))
        self.held_out_ = np.sort(held_out)
        self.radius_ = float(np.quantile(held_out, self.quantile))
        self.n_far_ = int((held_out > self.radius_).sum())
        self.n_reference_ = len(order)
        core_sq = _sq_distances(self.core_, self.core_)
        self.bandwidth_ = float(np.sqrt(np.median(core_sq[np.triu_indices(half, 1)]))) or 1.0
        core = self._kernel(self.core_, self.core_)
        self.core_term_ = float((core.sum() - np.trace(core)) / (half * (half - 1)))
        self.pool_kernel_ = self._kernel(self.pool_, self.pool_)
        self.pool_to_core_ = self._kernel(self.pool_, self.core_).mean(1)
        self.experts_ = np.unique(experts)
        # routing needs no held-out half: every reference row's route is the reference; the
        # last slot counts rows routed to an expert the reference never saw (none here)
        slots = np.searchsorted(self.experts_, experts[order])
        self.routing_counts_ = np.bincount(slots, minlength=len(self.experts_) + 1)
        self.routing_ = self.routing_counts_ / len(order)
        self.nulls_: dict[int, np.ndarray] = {}
        return self

    def _kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return np.exp(-_sq_distances(A, B) / (2.0 * self.bandwidth_**2))

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Each row's L2 distance to its nearest reference row: the per-row new-task score."""
        found, _ = _search(self.index_, np.ascontiguousarray(X, dtype=np.float32), 1)
        return np.sqrt(np.maximum(found[:, 0], 0.0))

    def _routing_shift(self, counts: np.ndarray) -> float:
        """Total variation between a window's routing counts and the reference's shares."""
        return 0.5 * float(np.abs(counts / counts.sum() - self.routing_).sum())

    def mmd_null(self, n: int) -> np.ndarray:
        """MMD statistics of `n_null` windows of n pool rows drawn with replacement (pairs of one
        pool row with itself are left out, as the window's diagonal is)."""
        if n not in self.nulls_:
            rng = np.random.default_rng(self.seed + n)
            out = np.empty(self.n_null)
            for b in range(self.n_null):
                idx = rng.integers(0, len(self.pool_), n)
                same = idx[:, None] == idx[None, :]
                within = np.where(same, 0.0, self.pool_kernel_[np.ix_(idx, idx)]).sum()
                pairs = max(int(n * n - same.sum()), 1)
                out[b] = within / pairs - 2.0 * self.pool_to_core_[idx].mean()
            self.nulls_[n] = out
        return self.nulls_[n]

    def _mmd(self, X: np.ndarray) -> float:
        """The window's MMD² less the core's own (constant) term."""
        n = len(X)
        within = self._kernel(X, X)
        return float(
            (within.sum() - np.trace(within)) / max(n * (n - 1), 1)
            - 2.0 * self._kernel(X, self.core_).mean()
        )

    def _routing_p(self, counts: np.ndarray) -> float:
        """Chi-square test of homogeneity: the window's routing counts against the reference's."""
        from scipy.stats import chi2_contingency

        table = np.stack([counts, self.routing_counts_])
        table = table[:, table.sum(0) > 0]
        if table.shape[1] < 2:
            return 1.0
        return float(chi2_contingency(table, correction=False).pvalue)

    def _new_task_p(self, far: int, n: int) -> float:
        """P(at least `far` of n fresh rows lie beyond the radius) when they are exchangeable
        with the reference: distribution-free, the radius' own sampling error accounted for."""
        from scipy.special import gammaln

        m = self.n_reference_
        k = self.n_far_ + 1  # the radius is the k-th largest held-out distance

        def log_binom(a, b):
            return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

        j = np.arange(far, n + 1)
        log_p = log_binom(j + k - 1, k - 1) + log_binom(n - j + m - k, m - k) - log_binom(n + m, m)
        return float(min(1.0, np.exp(log_p).sum()))

    def _rank_p(self, distance: np.ndarray) -> float:
        """Mann-Whitney's one-sided test: are these rows farther from the reference than its
        own rows are (their leave-one-out distances)? Normal approximation, exchangeable rows."""
        from scipy.stats import norm

        m, k = len(self.held_out_), len(distance)
        below = np.searchsorted(self.held_out_, distance, "left")
        ties = np.searchsorted(self.held_out_, distance, "right") - below
        u = float((below + ties / 2).sum())
        z = (u - k * m / 2) / np.sqrt(k * m * (k + m + 1) / 12)
        return float(norm.sf(z))

    def _scan_p(self, distance: np.ndarray) -> float:
        """The new-task tests (share beyond the radius, ranks of the distances) on the newest 5, 10,
        25, 50, ... rows and on the whole window, Bonferroni-adjusted: a new task shows first in
        the newest rows, where a short suffix sees it before it is a large share of the window."""
        n = len(distance)
        lengths = [k for k in SCAN if k < n] + [n]
        far = distance > self.radius_
        p = min(
            min(self._new_task_p(int(far[-k:].sum()), k), self._rank_p(distance[-k:]))
            for k in lengths
        )
        return min(1.0, p * 2 * len(lengths))

    def score(self, X: np.ndarray, experts: np.ndarray, version: str | None = None) -> DriftReport:
        """Test one window (its rows and routed experts)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_ or not len(X):
            raise ValueError(
                f"a window of shape {X.shape}; the reference has {self.n_features_in_} features"
            )
        X = X.astype(np.float64)
        experts = np.asarray(experts, dtype=np.int64)
        known = np.isin(experts, self.experts_)  # else an expert the reference never routed to
        slots = np.where(known, np.searchsorted(self.experts_, experts), len(self.experts_))
        counts = np.bincount(slots, minlength=len(self.experts_) + 1)
        distance = self.distances(X)
        far = distance > self.radius_
        mmd = self._mmd(X)
        p = np.array(
            [
                (1.0 + (self.mmd_null(len(X)) >= mmd).sum()) / (1.0 + self.n_null),
                self._routing_p(counts),
                self._scan_p(distance),
            ]
        )
        return DriftReport(
            drift=bool(p.min() <= self.alpha / len(STATISTICS)),
            score=mmd + self.core_term_,
            p_value=float(min(1.0, p.min() * len(STATISTICS))),
            new_task_share=float(far.mean()),
            routing_shift=self._routing_shift(counts),
            window=len(X),
            model_version=version,
            p_values={name: float(v) for name, v in zip(STATISTICS, p, strict=True)},
        )
