import numpy as np
import pytest

from clflow.tame.detector import LossShiftDetector, one_sided_p


def feed(det, losses):
    return [det.update(float(x)) for x in losses]


def test_p_value():
    assert abs(one_sided_p(0.0) - 0.5) < 1e-12
    assert abs(one_sided_p(3.09) - 0.001) < 1e-4


def test_fires_on_a_loss_jump_after_window_batches():
    rng = np.random.default_rng(0)
    flat = 0.3 + 0.05 * rng.standard_normal(60)
    jump = 3.0 + 0.3 * rng.standard_normal(5)
    out = feed(LossShiftDetector(alpha=1e-3, window=2, warmup=10), np.concatenate([flat, jump]))
    assert "shift" not in out[:60]
    assert out[60] == "suspect" and out[61] == "shift"


def test_silent_on_a_noisy_flat_loss():
    rng = np.random.default_rng(1)
    det = LossShiftDetector(alpha=1e-3, window=2, warmup=10)
    # heavy-tailed noise: the occasional bad batch must not look like a new task
    losses = np.abs(0.3 + 0.1 * rng.standard_t(3, size=5000))
    assert "shift" not in feed(det, losses)


def test_falling_loss_of_a_fresh_expert_is_not_a_shift():
    det = LossShiftDetector(warmup=10)
    assert set(feed(det, np.geomspace(5.0, 0.05, 40))) == {"ok"}


def test_small_jump_below_effect_size_is_ignored():
    det = LossShiftDetector(alpha=1e-3, window=1, warmup=5, min_rise=0.4, min_std=1e-3)
    feed(det, [0.10] * 20)
    assert det.update(0.5) == "ok"  # significant, but a generalisation gap, not a task
    assert det.update(1.5) == "shift"


@pytest.mark.parametrize("n_classes", [2, 10, 100])
def test_the_floor_is_a_share_of_the_chance_loss(n_classes):
    """The same relative rise is a shift for 2, 10 or 100 classes; an absolute 1-nat floor
    would never fire for 2 classes, whose loss rises from ~0 to about log 2 = 0.69."""
    rng = np.random.default_rng(0)
    chance = np.log(n_classes)
    det = LossShiftDetector(alpha=1e-3, window=2, warmup=10, min_rise=0.4, n_classes=n_classes)
    flat = 0.05 * chance * (1 + 0.1 * rng.standard_normal(40))
    out = feed(det, flat)
    assert "shift" not in out
    assert feed(det, [0.3 * chance, 0.3 * chance]) == ["ok", "ok"]  # a rise < 0.4 log C
    det = LossShiftDetector(alpha=1e-3, window=2, warmup=10, min_rise=0.4, n_classes=n_classes)
    feed(det, flat)
    assert feed(det, [0.9 * chance, 0.9 * chance]) == ["suspect", "shift"]


def test_a_single_outlier_is_held_then_accepted():
    det = LossShiftDetector(alpha=1e-3, window=2, warmup=5)
    feed(det, [0.2] * 20)
    assert det.update(4.0) == "suspect"
    assert det.update(0.2) == "ok" and det.n_suspect == 0


def test_state_round_trip():
    det = LossShiftDetector()
    feed(det, [0.5, 0.4, 0.3])
    again = LossShiftDetector().set_state(det.get_state())
    assert list(again.losses) == list(det.losses) and again.n_accepted == 3
