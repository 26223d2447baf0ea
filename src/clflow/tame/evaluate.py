"""Evaluation of TAME that uses ground truth the learner never sees: task ids, boundaries."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from clflow.evaluation import RunResult
from clflow.metrics import detection_scores, shift_points
from clflow.streams import Stream
from clflow.tame.learner import TameLearner


def batch_tasks(stream: Stream, batch_experience: np.ndarray) -> np.ndarray:
    """True task of each training batch."""
    task_of = {
        int(e): int(stream.train.task[stream.train.experience == e][0])
        for e in np.unique(batch_experience)
    }
    return np.array([task_of[int(e)] for e in batch_experience], dtype=np.int64)


def oracle_experts(learner: TameLearner, tasks: np.ndarray) -> dict[int, int]:
    """Task -> the live expert that trained on most of its batches."""
    votes: dict[int, Counter] = {}
    for task, eid, status in zip(tasks, learner.log_.expert, learner.log_.status):
        if status == "ok" and eid in learner.experts_:
            votes.setdefault(int(task), Counter())[eid] += 1
    return {t: c.most_common(1)[0][0] for t, c in votes.items()}


def tame_scores(
    learner: TameLearner, stream: Stream, batch_experience: np.ndarray, tolerance: int
) -> dict:
    """Detection quality, selector accuracy and oracle-routed accuracy of a trained TAME learner."""
    tasks = batch_tasks(stream, batch_experience)
    scores = detection_scores(shift_points(tasks), learner.detections_, tolerance)
    oracle = oracle_experts(learner, tasks)
    test = stream.test
    known = np.isin(test.task, list(oracle))
    target = np.array([oracle.get(int(t), -1) for t in test.task])
    routed = learner.route(test.X)
    oracle_pred = learner.predict_with(test.X[known], target[known])
    per_exp = [
        np.mean(
            oracle_pred[test.experience[known] == j] == test.y[known][test.experience[known] == j]
        )
        for j in np.unique(test.experience[known])
    ]
    scores.update(
        {
            "n_experts": float(learner.n_experts),
            "selector_accuracy": float(np.mean(routed[known] == target[known])),
            "oracle_avg_accuracy": float(np.mean(per_exp)),
            "selector_parameters": float(learner.router_.selector_.n_parameters()),
            "selector_cnn": float(learner.router_.selector_.backbone == "cnn"),  # auto chose a CNN
            **{k: float(v) for k, v in learner.parameter_counts().items()},
            # rows, selector weights and class statistics in bytes, as every method reports
            **{k: float(v) for k, v in learner.memory_report().items()},
        }
    )
    return scores


def write_plots(learner: TameLearner, result: RunResult, stream: Stream, plots: Path) -> None:
    """The loss per batch with true and detected shifts, and the accuracy matrix (PNG and CSV)."""
    from clflow.plots import accuracy_heatmap, loss_with_boundaries, write_table

    plots.mkdir(parents=True, exist_ok=True)
    loss = np.asarray(learner.log_.loss)
    true = shift_points(batch_tasks(stream, result.batch_experience))
    title = "TAME: loss, true (dashed) and detected (red) shifts"
    loss_with_boundaries(loss, true, learner.detections_, title, plots / "loss.png")
    accuracy_heatmap(np.nan_to_num(result.R), "TAME accuracy matrix", plots / "matrix.png")
    R = result.R  # R[i][j]: rows trained through i, columns tested on j
    write_table(
        plots / "matrix.csv",
        {
            "trained_through": np.arange(len(R)),
            **{f"experience_{j}": R[:, j] for j in range(R.shape[1])},
        },
    )
    batches = np.arange(len(loss))
    write_table(plots / "loss.csv", {"batch": batches, "loss": loss, "expert": learner.log_.expert})
