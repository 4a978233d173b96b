"""The drift window and its gauges: exact bookkeeping, and on calibration-like normal data the share
of p-values below 0.01 sits near 1%, while shifted data pushes it far above."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN, make_tiny_columns
from tests.service.conftest import tiny_records
from tests.service.test_admin_and_metrics import samples, value
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.thresholds import ThresholdSet, sort_calibration
from vae_anomaly.service.app import create_app
from vae_anomaly.service.drift import DriftWindow
from vae_anomaly.service.settings import Settings

CALIBRATION_ROWS = WINDOW = 5000


def test_window_matches_a_brute_force_recount():
    rng = np.random.default_rng(0)
    window = DriftWindow(50)
    scores_seen, p_seen = np.zeros(0), np.zeros(0)
    for size in [0, 1, 7, 30, 49, 50, 51, 3, 120, 2]:  # fills, wraps, overflows within one batch
        scores, p = rng.normal(5, 2, size), rng.random(size) * 0.05
        summary = window.add(scores, p)
        scores_seen, p_seen = np.concatenate([scores_seen, scores])[-50:], np.concatenate([p_seen, p])[-50:]
        assert summary.records == len(scores_seen)
        assert summary.mean_score == pytest.approx(scores_seen.mean() if len(scores_seen) else 0.0)
        for level in (0.01, 0.001):
            expected = (p_seen < level).mean() if len(p_seen) else 0.0
            assert summary.share_below[level] == pytest.approx(expected)


def test_empty_window_and_bad_size():
    summary = DriftWindow(10).summary()
    assert summary.records == 0 and summary.mean_score == 0.0 and summary.share_below == {0.01: 0.0, 0.001: 0.0}
    with pytest.raises(ValueError, match="at least 1"):
        DriftWindow(0)


def test_gauges_exist_before_traffic(client):
    metrics = samples(client)
    assert value(metrics, "vae_anomaly_window_records") == 0
    assert ("vae_anomaly_window_pvalue_below", (("level", "0.01"),)) in metrics
    assert ("vae_anomaly_window_pvalue_below", (("level", "0.001"),)) in metrics
    assert ("vae_anomaly_window_mean_score", ()) in metrics


@pytest.fixture(scope="module")
def recalibrated_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model calibrated on 5,000 fresh normal rows instead of its 160. With n calibration
    rows the smallest p-value is 1/(n+1): 160 rows cannot show a share below 0.001 at all, and the
    rate of p < 0.01 for a given calibration set varies like Beta(k, n+1-k) with k = 0.01(n+1), far
    too widely at n = 160 (sd about 0.6 points around a mean of 0.6%) to test "near 1%"."""
    detector = Detector.load(tiny_model_dir, "cpu")
    rows = detector.kind.columns_from_table(make_tiny_columns(CALIBRATION_ROWS, seed=101))
    calibration = sort_calibration(detector.score(rows).terms.score)
    detector.thresholds = ThresholdSet.from_targets(calibration, {"warn": 0.01, "critical": 0.001}, "warn")
    detector.manifest = detector.manifest.model_copy(update={"calibration_scores": calibration.tolist()})
    target = tmp_path_factory.mktemp("recalibrated") / "model"
    detector.save(target)
    return target


def window_share(client: TestClient, level: str) -> float:
    return value(samples(client), "vae_anomaly_window_pvalue_below", level=level)


def feed(client: TestClient, records: list[dict]) -> None:
    for start in range(0, len(records), 1000):
        response = client.post("/score", json={"records": records[start : start + 1000], "explain": 0})
        assert response.status_code == 200, response.text


def test_normal_traffic_sits_near_1_percent_and_shifted_traffic_far_above(recalibrated_model_dir):
    settings = Settings(
        model_dir=recalibrated_model_dir, device="cpu", api_token=API_TOKEN, max_batch=1000, drift_window=WINDOW
    )
    with TestClient(create_app(settings)) as client:
        feed(client, tiny_records(WINDOW, seed=102))  # new draws from the training distribution
        metrics = samples(client)
        assert value(metrics, "vae_anomaly_window_records") == WINDOW
        normal_share = window_share(client, "0.01")
        # Two sources of spread around 0.01: the window's binomial draw, sqrt(0.01 * 0.99 / 5000) =
        # 0.0014, and where the calibration set put its 1% tail, a Beta(50, 4951) rate with sd
        # 0.0014. Together sd 0.002; three of them either side gives [0.004, 0.016].
        assert 0.004 <= normal_share <= 0.016, normal_share
        assert window_share(client, "0.001") <= 0.004  # mean 0.001, same reasoning (sd 0.0006)
        normal_mean = value(metrics, "vae_anomaly_window_mean_score")

        shifted = tiny_records(WINDOW, seed=103)
        for record in shifted:  # the whole population moves by one standard deviation of `a`
            record["a"] += 2.0
            if record["b"] is not None:
                record["b"] += 6.0
        feed(client, shifted)
        shifted_share = window_share(client, "0.01")
        assert shifted_share >= 0.08, shifted_share  # 35 standard deviations above 0.01
        assert value(samples(client), "vae_anomaly_window_mean_score") > normal_mean
