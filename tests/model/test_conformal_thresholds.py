"""model.thresholds: the conformal threshold rule, p-values (hand examples and a property test on
exchangeable data), and the immutable ThresholdSet."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydantic import ValidationError

from vae_anomaly.model.thresholds import (
    Threshold,
    ThresholdSet,
    fpr_guaranteed,
    p_values,
    sort_calibration,
    threshold_for_fpr,
)


def test_sort_calibration():
    out = sort_calibration([3, 1.5, 2])
    assert out.dtype == np.float64
    assert out.tolist() == [1.5, 2.0, 3.0]


@pytest.mark.parametrize(
    ("n", "target", "k"),
    [
        (9, 0.1, 9),  # ceil(10 * 0.9) = 9: the maximum
        (9, 0.2, 8),
        (9, 0.5, 5),
        (99, 0.05, 95),
        (99, 0.01, 99),  # (n + 1)(1 - a) = 99 up to rounding: must not become 100 (> n)
        (199, 0.05, 190),
        (1000, 0.001, 1000),  # ceil(1001 * 0.999) = 1000
    ],
)
def test_threshold_is_the_kth_order_statistic(n: int, target: float, k: int):
    calibration = sort_calibration(np.arange(1, n + 1) * 1.5)
    assert threshold_for_fpr(calibration, target) == 1.5 * k
    assert fpr_guaranteed(n, target)


def test_too_few_calibration_rows_give_the_maximum_without_guarantee():
    calibration = sort_calibration([1.0, 2.0, 3.0, 4.0])
    assert threshold_for_fpr(calibration, 0.01) == 4.0
    assert not fpr_guaranteed(4, 0.01)
    assert not fpr_guaranteed(98, 0.01)
    assert fpr_guaranteed(99, 0.01)


def test_a_large_target_never_goes_below_the_minimum():
    assert threshold_for_fpr(sort_calibration([5.0, 6.0]), 0.99) == 5.0


def test_threshold_requires_calibration_scores():
    with pytest.raises(ValueError, match="no calibration scores"):
        threshold_for_fpr(np.array([]), 0.05)


def test_p_values_hand_examples():
    calibration = sort_calibration([1.0, 2.0, 3.0, 4.0])
    got = p_values(calibration, np.array([0.0, 1.0, 2.5, 4.0, 4.5]))
    # (1 + #{cal >= s}) / (n + 1)
    np.testing.assert_allclose(got, [5 / 5, 5 / 5, 3 / 5, 2 / 5, 1 / 5])


def test_p_values_count_ties_as_at_least_as_extreme():
    calibration = sort_calibration([1.0, 2.0, 2.0, 2.0, 3.0])
    got = p_values(calibration, np.array([2.0, 2.0 + 1e-12, 1.9999]))
    np.testing.assert_allclose(got, [(1 + 4) / 6, (1 + 1) / 6, (1 + 4) / 6])


def test_p_values_shape_and_range():
    rng = np.random.default_rng(0)
    calibration = sort_calibration(rng.normal(size=50))
    got = p_values(calibration, rng.normal(size=(7,)) * 10)
    assert got.shape == (7,) and got.dtype == np.float64
    assert ((got >= 1 / 51) & (got <= 1.0)).all()


def test_flagged_exactly_when_p_value_at_most_target():
    """score > threshold_for_fpr(a) ⇔ p_value <= a, ties included, whenever the target is guaranteed."""
    rng = np.random.default_rng(1)
    for n, target in [(19, 0.05), (99, 0.01), (200, 0.1), (57, 0.03)]:
        calibration = sort_calibration(rng.integers(0, 30, n).astype(float))  # many ties
        scores = rng.integers(-2, 33, 500).astype(float)
        flagged = scores > threshold_for_fpr(calibration, target)
        np.testing.assert_array_equal(flagged, p_values(calibration, scores) <= target + 1e-12)


# -- property: exchangeable normal data -----------------------------------------------------------

REPETITIONS = 1000


@pytest.mark.parametrize(("n", "target"), [(199, 0.05), (99, 0.1), (499, 0.01)])
def test_false_positive_rate_holds_on_exchangeable_data(n: int, target: float):
    """Calibration and test scores drawn i.i.d. from one distribution, many times over: the mean
    observed false-positive rate matches the conformal value (n + 1 - k) / (n + 1) <= target."""
    rng = np.random.default_rng(2)
    m = 1000
    k = int(np.ceil((n + 1) * (1 - target) - 1e-9))
    exact = (n + 1 - k) / (n + 1)
    assert exact <= target
    calibration = rng.gumbel(size=(REPETITIONS, n))
    test = rng.gumbel(size=(REPETITIONS, m))
    cut = np.array([threshold_for_fpr(sort_calibration(row), target) for row in calibration])
    rates = np.mean(test > cut[:, None], axis=1)
    # One repetition's rate varies with the calibration draw (about a(1-a)/(n+2)) and the test
    # draw (a(1-a)/m); allow 4 standard deviations of the mean over the repetitions.
    sd = np.sqrt(target * (1 - target) * (1 / (n + 2) + 1 / m) / REPETITIONS)
    assert abs(rates.mean() - exact) < 4 * sd
    assert rates.mean() < target + 4 * sd
    # An off-by-one rule (order statistic k - 1) would be off by 1/(n + 1): the test can tell.
    assert 1 / (n + 1) > 8 * sd


def test_p_values_are_uniform_on_exchangeable_data():
    rng = np.random.default_rng(3)
    n = 99
    values = []
    for _ in range(REPETITIONS):
        calibration = sort_calibration(rng.normal(size=n))
        values.append(p_values(calibration, rng.normal(size=500)))
    p = np.concatenate(values)
    assert p.size == REPETITIONS * 500
    # Discrete uniform on {1, ..., n + 1} / (n + 1): P(p <= t) = floor(t (n + 1)) / (n + 1).
    for t in (0.01, 0.05, 0.1, 0.25, 0.5, 0.9):
        assert np.mean(p <= t) == pytest.approx(np.floor(t * (n + 1)) / (n + 1), abs=0.007)
    assert p.mean() == pytest.approx((n + 2) / (2 * (n + 1)), abs=0.004)


def test_p_values_are_small_for_shifted_data():
    rng = np.random.default_rng(4)
    calibration = sort_calibration(rng.normal(size=199))
    assert np.median(p_values(calibration, rng.normal(size=500) + 3.0)) < 0.02


# -- ThresholdSet ---------------------------------------------------------------------------------


@pytest.fixture
def threshold_set() -> ThresholdSet:
    calibration = sort_calibration(np.arange(1.0, 101.0))  # 1..100
    return ThresholdSet.from_targets(calibration, {"warn": 0.05, "critical": 0.01}, active="warn")


def test_from_targets(threshold_set: ThresholdSet):
    assert threshold_set.names == ("warn", "critical")
    assert threshold_set.thresholds["warn"] == Threshold(value=96.0, target_fpr=0.05)  # k = ceil(101 * .95) = 96
    assert threshold_set.thresholds["critical"] == Threshold(value=100.0, target_fpr=0.01)
    assert threshold_set.active == "warn"


def test_exceeded_is_strict_and_in_name_order(threshold_set: ThresholdSet):
    got = threshold_set.exceeded(np.array([50.0, 96.0, 96.5, 100.0, 101.0]))
    assert got.shape == (5, 2) and got.dtype == bool
    assert got.tolist() == [[False, False], [False, False], [True, False], [True, False], [True, True]]


def test_with_value_returns_a_new_set(threshold_set: ThresholdSet):
    changed = threshold_set.with_value("warn", 10.0)
    assert changed is not threshold_set
    assert changed.thresholds["warn"] == Threshold(value=10.0, target_fpr=None)
    assert threshold_set.thresholds["warn"].value == 96.0  # the original is untouched
    added = threshold_set.with_value("page", 99.5)
    assert added.names == ("warn", "critical", "page")
    assert threshold_set.names == ("warn", "critical")
    assert added.exceeded(np.array([99.7])).tolist() == [[True, False, True]]


def test_with_target_returns_a_new_set(threshold_set: ThresholdSet):
    changed = threshold_set.with_target("critical", 0.2)
    assert changed.thresholds["critical"] == Threshold(value=81.0, target_fpr=0.2)  # ceil(101 * 0.8) = 81
    assert threshold_set.thresholds["critical"].value == 100.0
    assert changed.calibration is threshold_set.calibration


def test_with_active_returns_a_new_set(threshold_set: ThresholdSet):
    changed = threshold_set.with_active("critical")
    assert (changed.active, threshold_set.active) == ("critical", "warn")
    assert changed.thresholds == threshold_set.thresholds
    assert changed.thresholds is not threshold_set.thresholds


def test_unknown_active_threshold_raises(threshold_set: ThresholdSet):
    with pytest.raises(ValueError, match=r"active threshold 'page' is not one of \['critical', 'warn'\]"):
        threshold_set.with_active("page")
    with pytest.raises(ValueError, match="active threshold 'x'"):
        ThresholdSet(threshold_set.calibration, {"warn": Threshold(value=1.0)}, "x")


def test_threshold_set_is_frozen(threshold_set: ThresholdSet):
    with pytest.raises(dataclasses.FrozenInstanceError):
        threshold_set.active = "critical"  # type: ignore[misc]


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1])
def test_threshold_target_must_be_a_rate(target: float):
    with pytest.raises(ValidationError):
        Threshold(value=1.0, target_fpr=target)
