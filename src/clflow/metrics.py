"""Continual-learning metrics over the accuracy matrix R (DESIGN.md).

R[i][j] = accuracy on experience j's test rows after training through experience i.
"""

from __future__ import annotations

import numpy as np


def _matrix(R: np.ndarray | list) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def avg_accuracy(R) -> float:
    """mean_j R[T-1][j]"""
    return float(_matrix(R)[-1].mean())


def forgetting(R) -> float:
    """mean_{j<T-1} (max_{i<T-1} R[i][j] - R[T-1][j]); 0 with a single experience.

    NaN entries (not measured: rows before an incremental resume) are skipped.
    """
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([np.nanmax(R[: T - 1, j]) - R[T - 1, j] for j in range(T - 1)]))


def bwt(R) -> float:
    """mean_{j<T-1} (R[T-1][j] - R[j][j]); 0 with a single experience."""
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def fwt(R, b) -> float:
    """mean_{j>0} (R[j-1][j] - b_j), b_j = accuracy of the untrained model."""
    R = _matrix(R)
    b = np.asarray(b, dtype=float)
    T = len(R)
    if b.shape != (T,):
        raise ValueError(f"b must have {T} entries, got shape {b.shape}")
    if T < 2:
        return 0.0
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def zero_shot(R) -> float:
    """mean_{j>0} R[j-1][j]: accuracy on each experience before its first label (its classes
    unseen; only a head that knows their names can score here)."""
    R = _matrix(R)
    T = len(R)
    return float(np.mean([R[j - 1, j] for j in range(1, T)])) if T > 1 else 0.0


def summarize(R, b) -> dict[str, float]:
    """The four DESIGN.md metrics of one run."""
    return {
        "avg_accuracy": avg_accuracy(R),
        "forgetting": forgetting(R),
        "bwt": bwt(R),
        "fwt": fwt(R, b),
    }


def mean_std(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over seeds, with `<key>_std` beside it."""
    out: dict[str, float] = {}
    for key in runs[0]:
        vals = np.array([r[key] for r in runs], dtype=float)
        out[key] = float(vals.mean())
        out[f"{key}_std"] = float(vals.std())
    return out


def shift_points(batch_task: np.ndarray) -> np.ndarray:
    """Batch indices where the true task changes (a recurring task counts; a repeat of the same does
    not)."""
    batch_task = np.asarray(batch_task)
    return np.flatnonzero(batch_task[1:] != batch_task[:-1]) + 1


def detection_scores(
    true: np.ndarray | list, detected: np.ndarray | list, tolerance: int
) -> dict[str, float]:
    """Match detections to true shift points within `tolerance` batches after each.

    Each true point takes the first unmatched detection in [t, t + tolerance];
    unmatched detections are false alarms. With no true shift, recall is 1 and
    precision is 1 only when nothing fired.
    """
    true, detected = sorted(int(t) for t in true), sorted(int(d) for d in detected)
    used: set[int] = set()
    delays = []
    for t in true:
        hit = next((d for d in detected if t <= d <= t + tolerance and d not in used), None)
        if hit is not None:
            used.add(hit)
            delays.append(hit - t)
    tp = len(delays)
    precision = tp / len(detected) if detected else 1.0
    recall = tp / len(true) if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "detection_precision": precision,
        "detection_recall": recall,
        "detection_f1": f1,
        "detection_delay": float(np.mean(delays)) if delays else 0.0,
        "false_alarms": float(len(detected) - tp),
    }
