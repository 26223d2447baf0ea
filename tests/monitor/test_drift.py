"""The drift detector: calibrated on unshifted windows, and each statistic sees its shift."""

from __future__ import annotations

import numpy as np
import pytest

from clflow.monitor.drift import DriftDetector

CENTRES = np.random.default_rng(42).normal(0, 3, size=(5, 16))  # 4 known tasks and a new one


def draw(rng, n: int, tasks=(0, 1, 2, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the given tasks (uniformly) and the expert each is routed to (its task)."""
    task = rng.choice(tasks, n)
    return CENTRES[task] + rng.normal(size=(n, 16)), task


@pytest.fixture(scope="module")
def detector() -> DriftDetector:
    return DriftDetector(alpha=0.01, n_null=500).fit(*draw(np.random.default_rng(0), 400))


def test_unshifted_windows_rarely_alarm():
    """Calibrated over references as a user meets them: each fitted on its own 400 rows, each
    scoring 30 windows of fresh rows of the same tasks."""
    flags, p_values = [], []
    for seed in range(10):
        detector = DriftDetector(alpha=0.01, n_null=300).fit(
            *draw(np.random.default_rng(seed), 400)
        )
        rng = np.random.default_rng(100 + seed)
        for _ in range(30):
            report = detector.score(*draw(rng, 100))
            flags.append(report.drift)
            p_values.append(list(report.p_values.values()))
    assert np.mean(flags) <= 0.04  # alpha 0.01 a window (measured: 0.014 over 1,000 windows)
    share = (np.array(p_values) <= 0.2).mean(0)
    assert (share <= 0.3).all(), share  # no test over-eager
    assert share[0] >= 0.1, share  # MMD's resampled null: about uniform, not only conservative


def test_a_new_task_is_drift_with_its_share(detector):
    rng = np.random.default_rng(2)
    X, experts = draw(rng, 100)
    X[:20] = CENTRES[4] + rng.normal(size=(20, 16))  # a fifth of the traffic is a new task
    report = detector.score(X, experts)
    assert report.drift and report.p_values["new_task_share"] < 1e-4
    assert 0.15 <= report.new_task_share <= 0.3


def test_traffic_on_one_expert_is_a_routing_shift(detector):
    report = detector.score(*draw(np.random.default_rng(3), 100, tasks=(0,)))
    assert report.drift and report.p_values["routing_shift"] < 1e-4
    assert report.routing_shift > 0.6  # 1 - 1/4 in total variation
    assert report.p_values["new_task_share"] > 0.01  # rows of a known task are not new


def test_a_small_domain_shift_moves_the_mmd(detector):
    X, experts = draw(np.random.default_rng(4), 150)
    report = detector.score(X + 1.0, experts)  # every row moved by its noise, routing unchanged
    assert report.p_values["mmd2"] < 0.005 and report.drift
    assert report.score > detector.score(X, experts).score


def test_a_window_of_another_width_is_refused(detector):
    with pytest.raises(ValueError, match="16 features"):
        detector.score(np.zeros((10, 8)), np.zeros(10))
    with pytest.raises(ValueError, match="at least 20"):
        DriftDetector().fit(np.zeros((5, 3)), np.zeros(5))
    as_json = detector.score(*draw(np.random.default_rng(5), 50), version="7").as_dict()
    assert {"drift", "score", "p_value", "new_task_share", "window", "model_version"} <= set(
        as_json
    )
    assert as_json["window"] == 50 and as_json["model_version"] == "7"
