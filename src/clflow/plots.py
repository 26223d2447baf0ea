"""Figures a person would rather look at than read: heatmaps and accuracy curves (PNG, written
atomically)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from clflow.util.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def accuracy_heatmap(R: np.ndarray, title: str, path: str | Path) -> None:
    """R[i][j] as a heatmap: rows = trained through, columns = evaluated on."""
    R = np.asarray(R)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(R), 0.8 + 0.55 * len(R)))
    im = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
    for (i, j), v in np.ndenumerate(R):
        ax.text(
            j,
            i,
            f"{v:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if v < 0.6 else "black",
        )
    ax.set_xlabel("evaluated on experience")
    ax.set_ylabel("trained through experience")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def accuracy_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, path: str | Path
) -> None:
    """Mean accuracy on experiences seen so far, after each experience, one line (± std) per
    method."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, (mean, std) in curves.items():
        x = np.arange(len(mean))
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("trained through experience")
    ax.set_ylabel("accuracy on seen experiences")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def seen_accuracy(R: np.ndarray) -> np.ndarray:
    """Row i: mean of R[i][0..i], the accuracy on experiences seen so far."""
    R = np.asarray(R)
    return np.array([R[i, : i + 1].mean() for i in range(len(R))])


def loss_with_boundaries(
    loss: np.ndarray, true: np.ndarray, detected: list[int], title: str, path: str | Path
) -> None:
    """Training loss per batch; true task boundaries dashed grey, detections red."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(np.arange(len(loss)), loss, lw=0.8, color="tab:blue", label="loss")
    for i, t in enumerate(true):
        ax.axvline(t, color="grey", ls="--", lw=1, label="true boundary" if i == 0 else None)
    for i, d in enumerate(detected):
        ax.axvline(d, color="tab:red", lw=1, alpha=0.7, label="detected" if i == 0 else None)
    ax.set_xlabel("training batch")
    ax.set_ylabel("loss (before update)")
    ax.set_yscale("log")  # losses span 1e-3 to 10: the jumps stay visible
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def seen_curve(matrices: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of the accuracy on the experiences seen so far."""
    seen = np.array([seen_accuracy(R) for R in matrices])
    return seen.mean(0), seen.std(0)


def write_table(path: str | Path, columns: Mapping[str, Any]) -> None:
    """A CSV of equal-length columns, written atomically (what DVC plots read)."""
    import polars as pl

    with atomic_path(path) as tmp:
        pl.DataFrame(dict(columns)).write_csv(tmp)


def seen_accuracy_plots(
    figures: Mapping[str, Mapping[str, Sequence[np.ndarray]]], title: str, plots: Path
) -> None:
    """Accuracy on the experiences seen so far, mean ± std over seeds: `figures` maps a PNG's
    name to its curves (label -> each seed's accuracy matrix); `title` may hold `{}` for the
    name. Every curve's mean also goes to `plots/accuracy.csv` (a DVC plot), as `<label>` or,
    with several figures, `<name>_<label>`."""
    plots.mkdir(parents=True, exist_ok=True)
    table: dict[str, np.ndarray] = {}
    for name, labels in figures.items():
        curves = {label: seen_curve(matrices) for label, matrices in labels.items()}
        accuracy_curves(curves, title.format(name), plots / f"{name}.png")
        for label, (mean, _) in curves.items():
            table[label if len(figures) == 1 else f"{name}_{label}"] = np.round(mean, 4)
    steps = len(next(iter(table.values())))
    write_table(plots / "accuracy.csv", {"experience": np.arange(steps), **table})


def method_plots(matrices: Mapping[str, Sequence[np.ndarray]], plots: Path) -> None:
    """Each method's accuracy matrix (mean over seeds) as a heatmap, and every method's accuracy
    on seen experiences in one figure (`accuracy.png`, `accuracy.csv`)."""
    plots.mkdir(parents=True, exist_ok=True)
    for method, Rs in matrices.items():
        title = f"{method}: accuracy matrix (mean of {len(Rs)} seeds)"
        accuracy_heatmap(np.mean(Rs, axis=0), title, plots / f"matrix_{method}.png")
    seen_accuracy_plots({"accuracy": matrices}, "Accuracy on seen experiences", plots)
