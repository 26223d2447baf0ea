import numpy as np
import pytest

from clflow.metrics import avg_accuracy, bwt, forgetting, fwt, mean_std, summarize

# Hand-computed example, T = 3.
R = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.6, 0.8, 0.3],
        [0.5, 0.7, 0.95],
    ]
)
b = np.array([0.1, 0.2, 0.25])


def test_avg_accuracy():
    assert avg_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)


def test_forgetting_uses_best_earlier_accuracy():
    # j=0: max(0.9, 0.6) - 0.5 = 0.4 ; j=1: max(0.1, 0.8) - 0.7 = 0.1
    assert forgetting(R) == pytest.approx((0.4 + 0.1) / 2)


def test_bwt():
    # j=0: 0.5 - 0.9 ; j=1: 0.7 - 0.8
    assert bwt(R) == pytest.approx((-0.4 - 0.1) / 2)


def test_fwt():
    # j=1: R[0][1] - b1 = 0.1 - 0.2 ; j=2: R[1][2] - b2 = 0.3 - 0.25
    assert fwt(R, b) == pytest.approx((-0.1 + 0.05) / 2)


def test_single_experience_has_no_forgetting():
    assert summarize([[0.8]], [0.1]) == {
        "avg_accuracy": 0.8,
        "forgetting": 0.0,
        "bwt": 0.0,
        "fwt": 0.0,
    }


def test_forgetting_is_negative_when_accuracy_grows():
    # DESIGN.md's definition is not clipped at 0: improvement shows as negative forgetting.
    up = np.array([[0.5, 0.0], [0.9, 0.8]])
    assert forgetting(up) == pytest.approx(-0.4)
    assert bwt(up) == pytest.approx(0.4)


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3), np.zeros((0, 0))])
def test_rejects_non_square(bad):
    with pytest.raises(ValueError, match="square"):
        avg_accuracy(bad)


def test_fwt_checks_reference_length():
    with pytest.raises(ValueError, match="3 entries"):
        fwt(R, [0.1, 0.2])


def test_mean_std():
    out = mean_std([{"a": 1.0}, {"a": 3.0}])
    assert out == {"a": 2.0, "a_std": 1.0}


def test_forgetting_skips_unmeasured_entries():
    Rn = R.copy()
    Rn[0, 1] = np.nan  # not measured (row before a resume point)
    assert forgetting(Rn) == pytest.approx(forgetting(R))


def test_shift_points_ignore_repeats_of_the_same_task():
    from clflow.metrics import shift_points

    assert shift_points([0, 0, 1, 1, 0, 0, 0, 2]).tolist() == [2, 4, 7]
    assert shift_points([3, 3, 3]).tolist() == []


def test_detection_scores_match_within_tolerance():
    from clflow.metrics import detection_scores

    s = detection_scores(true=[10, 50, 90], detected=[11, 30, 52, 200], tolerance=3)
    assert s["detection_recall"] == pytest.approx(2 / 3)
    assert s["detection_precision"] == pytest.approx(2 / 4)
    assert s["false_alarms"] == 2 and s["detection_delay"] == pytest.approx(1.5)
    assert s["detection_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_detection_scores_on_a_stationary_stream():
    from clflow.metrics import detection_scores

    assert detection_scores([], [], 5)["detection_f1"] == 1.0
    quiet_fail = detection_scores([], [7], 5)
    assert quiet_fail["false_alarms"] == 1 and quiet_fail["detection_precision"] == 0.0
