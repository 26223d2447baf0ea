"""Why not ADWIN? TAME's loss-shift test against river's drift detectors; prints a markdown table.

    pip install -e '.[bench]'    # river, for ADWIN and Page-Hinkley
    python bench/detection.py [--seeds 0 1 2] [--streams NAME ...]

Every detector reads the same signal: the per-batch training loss (before the
step) of one plain expert trained on the stream's batches, in the order TAME
sees them. A detection counts when it falls within `tame.match_tolerance`
batches after a true boundary (`clflow.metrics.detection_scores`); anything
else is a false alarm. Rows:

- TAME (learner): the real TameLearner, whose experts switch at each detection;
- TAME test, relative floor: its detector (`min_rise` × log C) on the plain loss;
- TAME test, 1-nat floor: the same test with the old absolute effect size;
- ADWIN, Page-Hinkley: river's detectors with their default parameters; ADWIN
  checks for change every 32 values by default (`clock`), so it also runs with
  `clock=1`. A second F1 column counts detections up to 30 batches late.

The streams include a 2-class one (digit parity under pixel permutations) and a
tabular one with unscaled features (scikit-learn's breast-cancer data, feature
values up to ~4,000, `normalize: none`), where loss levels differ from digits.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from clflow.config import StreamConfig, TameConfig, TrainConfig
from clflow.evaluation import run_stream
from clflow.learners import ContinualLearner, learner_from_config
from clflow.metrics import detection_scores, shift_points
from clflow.streams import Stream, build_stream
from clflow.streams.builders import domain_incremental, with_normalizer
from clflow.streams.loaders import RawData, load_digits, load_mnist1d
from clflow.tame.detector import LossShiftDetector, chance_loss
from clflow.tame.evaluate import batch_tasks
from clflow.tame.training import make_tame


def permuted(data: RawData, experiences: int, normalize: str) -> Stream:
    """A domain-incremental stream of `data` under feature permutations (as build_stream)."""
    cfg = StreamConfig(source="permuted_digits", experiences=experiences, normalize=normalize)
    return with_normalizer(domain_incremental(data, cfg), cfg.normalize)


def parity_digits(seed: int = 0) -> Stream:
    """2 classes (even / odd digit), 5 tasks of permuted pixels."""
    d = load_digits(0.3, seed)
    data = RawData(d.X_train, d.y_train % 2, d.X_test, d.y_test % 2, ["even", "odd"], d.shape)
    return permuted(data, 5, "standard")


def parity_mnist1d(seed: int = 0) -> Stream:
    """2 classes (even / odd), 5 tasks of permuted MNIST-1D signals: a hard, noisy loss."""
    d = load_mnist1d(0.3)
    data = RawData(d.X_train, d.y_train % 2, d.X_test, d.y_test % 2, ["even", "odd"], d.shape)
    return permuted(data, 5, "standard")


def breast_cancer(seed: int = 0) -> Stream:
    """Tabular, 2 classes, unscaled features (no normalizer), 3 tasks of permuted features."""
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(
        X.astype(np.float32), y, test_size=0.3, random_state=seed, stratify=y
    )
    data = RawData(Xtr, ytr, Xte, yte, ["malignant", "benign"], (1, X.shape[1]))
    return permuted(data, 3, "none")


STREAMS = {
    "Split-Digits (10 classes)": lambda: build_stream(StreamConfig(source="digits")),
    "Permuted-Digits (10 classes)": lambda: build_stream(StreamConfig(source="permuted_digits")),
    "Recurring A B A C B (permuted)": lambda: build_stream(
        StreamConfig(source="permuted_digits", experiences=3, tasks=[0, 1, 0, 2, 1])
    ),
    "Stationary (digits, 5 chunks)": lambda: build_stream(
        StreamConfig(source="digits", experiences=1, tasks=[0, 0, 0, 0, 0])
    ),
    "Split-MNIST-1D (10 classes)": lambda: build_stream(StreamConfig(source="mnist1d")),
    "Permuted-MNIST-1D (10 classes)": lambda: build_stream(StreamConfig(source="permuted_mnist1d")),
    "Permuted parity digits (2 classes)": parity_digits,
    "Permuted parity MNIST-1D (2 classes)": parity_mnist1d,
    "Breast cancer, unscaled (2 classes, tabular)": breast_cancer,
}
DETECTORS = (
    "TAME (learner)",
    "TAME test, relative floor",
    "TAME test, 1-nat floor",
    "ADWIN",
    "ADWIN (clock 1)",
    "Page-Hinkley",
)
LATE = 30  # a second, generous tolerance: late detections count there


class LossTrace(ContinualLearner):
    """A plain expert that records each batch's training loss (computed before its step)."""

    def initialize(self, n_features: int) -> LossTrace:
        self.losses_: list[float] = []
        return super().initialize(n_features)  # type: ignore[return-value]

    def partial_fit(self, X, y, accept=None) -> LossTrace:
        super().partial_fit(X, y, accept)
        self.losses_.append(self.last_loss_)
        return self


def tame_test(losses: list[float], make) -> list[int]:
    """Batches where the TAME test declares a shift; a fresh detector follows each (as a
    fresh expert would)."""
    det, hits = make(), []
    for i, loss in enumerate(losses):
        if det.update(loss) == "shift":
            hits.append(i)
            det = make()
    return hits


def river_detections(losses: list[float], detector) -> list[int]:
    hits = []
    for i, loss in enumerate(losses):
        detector.update(loss)
        if detector.drift_detected:
            hits.append(i)
    return hits


def detections(
    stream: Stream, train: TrainConfig, tame: TameConfig, seed: int
) -> tuple[dict[str, list[int]], np.ndarray]:
    """Each detector's detections on one seed, and the true task of every batch."""
    from river.drift import ADWIN, PageHinkley  # the `bench` extra; main() checks it is there

    run = dict(batch_size=train.batch_size, epochs=train.epochs, seed=seed)
    learner = make_tame(stream, train, tame, seed)
    result = run_stream(learner, stream, **run)
    plain = learner_from_config(stream, train, seed)
    trace = LossTrace(**plain.get_params())
    run_stream(trace, stream, **run)
    n_classes = len(stream.classes)
    detector = lambda min_rise: (
        lambda: LossShiftDetector(  # noqa: E731
            tame.alpha, tame.window, tame.warmup, tame.history, min_rise, n_classes
        )
    )
    return {
        "TAME (learner)": learner.detections_,
        "TAME test, relative floor": tame_test(trace.losses_, detector(tame.min_rise)),
        "TAME test, 1-nat floor": tame_test(trace.losses_, detector(1 / chance_loss(n_classes))),
        "ADWIN": river_detections(trace.losses_, ADWIN()),
        "ADWIN (clock 1)": river_detections(trace.losses_, ADWIN(clock=1)),
        "Page-Hinkley": river_detections(trace.losses_, PageHinkley()),
    }, batch_tasks(stream, result.batch_experience)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    args = parser.parse_args()
    try:
        import river  # noqa: F401
    except ImportError:  # --help works without it; a run says what to install
        sys.exit("error: bench/detection.py needs river: pip install -e '.[bench]' (or make bench)")
    train, tame = TrainConfig(seeds=args.seeds), TameConfig()
    print(f"\n### Shift detection ({len(args.seeds)} seeds, mean)\n")
    tol = tame.match_tolerance
    print(
        f"| stream | detector | F1 (≤ {tol} batches late) | delay (batches) | false alarms "
        f"| F1 (≤ {LATE} late) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.streams:
        stream = STREAMS[name]()
        scores: dict[str, list[dict]] = {d: [] for d in DETECTORS}
        late: dict[str, list[float]] = {d: [] for d in DETECTORS}
        for seed in args.seeds:
            found, tasks = detections(stream, train, tame, seed)
            for d, hits in found.items():
                scores[d].append(detection_scores(shift_points(tasks), hits, tol))
                late[d].append(detection_scores(shift_points(tasks), hits, LATE)["detection_f1"])
        for d in DETECTORS:
            mean = {k: np.mean([s[k] for s in scores[d]]) for k in scores[d][0]}
            print(
                f"| {name} | {d} | {mean['detection_f1']:.2f} | "
                f"{mean['detection_delay']:.1f} | {mean['false_alarms']:.1f} "
                f"| {np.mean(late[d]):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
