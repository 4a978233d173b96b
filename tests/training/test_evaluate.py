"""training.evaluate: detection metrics on hand examples and the report files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vae_anomaly.training.evaluate import detection_metrics, write_report

SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5])
LABELS = np.array([0, 0, 1, 1, 0, 1, 0])


def test_detection_metrics_hand_example():
    metrics = detection_metrics(SCORES, LABELS, {"t": 0.4, "strict": 0.9})
    assert (metrics["rows"], metrics["anomalies"]) == (7, 3)
    # pairs (anomaly, normal) ranked right: 0.35 beats 0.1, 0.2; 0.8 and 0.9 beat all four
    assert metrics["auroc"] == pytest.approx(10 / 12)
    assert 0 < metrics["auprc"] <= 1
    t = metrics["thresholds"]["t"]
    # score > 0.4 flags 0.8, 0.9 (anomalies) and 0.5 (normal); 0.4 itself is not flagged
    assert t == {
        "threshold": 0.4,
        "flagged": 3,
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "false_positive_rate": pytest.approx(1 / 4),
    }
    strict = metrics["thresholds"]["strict"]  # nothing is above the maximum
    assert (strict["flagged"], strict["precision"], strict["recall"], strict["f1"]) == (0, 0.0, 0.0, 0.0)


def test_detection_metrics_with_one_class():
    metrics = detection_metrics(SCORES, np.zeros(7, dtype=int), {"t": 0.4})
    assert metrics["auroc"] is None and metrics["auprc"] is None
    assert metrics["thresholds"]["t"]["recall"] == 0.0
    assert metrics["thresholds"]["t"]["false_positive_rate"] == pytest.approx(3 / 7)
    only_anomalies = detection_metrics(SCORES, np.ones(7, dtype=int), {"t": 0.4})
    assert only_anomalies["thresholds"]["t"]["false_positive_rate"] is None


def test_write_report(tmp_path: Path):
    metrics = detection_metrics(SCORES, LABELS, {"warn": 0.4})
    paths = write_report(tmp_path / "r", SCORES, LABELS, {"warn": 0.4}, metrics, "Title")
    assert [p.name for p in paths] == ["histogram.png", "roc.png", "report.md"]
    assert all(p.parent == tmp_path / "r" and p.stat().st_size > 0 for p in paths)
    text = (tmp_path / "r" / "report.md").read_text()
    assert text.startswith("# Title\n\nRows: 7, anomalies: 3.\nAUROC: 0.8333")
    assert "| warn | 0.400 | 3 | 0.667 | 0.667 | 0.667 | 0.2500 |" in text


@pytest.mark.filterwarnings("error")
def test_write_report_without_both_classes(tmp_path: Path):
    labels = np.zeros(7, dtype=int)
    metrics = detection_metrics(SCORES, labels, {"warn": 0.4})
    paths = write_report(tmp_path, SCORES, labels, {"warn": 0.4}, metrics, "T")
    assert [p.name for p in paths] == ["histogram.png", "report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "AUROC/AUPRC: need both classes." in text and "roc.png" not in text


def test_report_histogram_reads_with_a_heavy_tail_and_marks_each_threshold():
    """Issue 14 item 9: normals in 5..40 nats and anomalies to 35,000 put every normal score in one
    bar of a linear axis, with both threshold lines on top of each other."""
    from vae_anomaly.training.evaluate import histogram_figure

    rng = np.random.default_rng(0)
    normal = rng.gamma(4.0, 4.0, 3000)
    anomalies = rng.uniform(40, 35_000, 90)
    scores = np.r_[normal, anomalies]
    labels = np.r_[np.zeros(3000, dtype=int), np.ones(90, dtype=int)]
    thresholds = {"warn": float(np.quantile(normal, 0.99)), "critical": float(np.quantile(normal, 0.999))}
    figure = histogram_figure(scores, labels, thresholds, "t")
    axes = figure.axes[0]
    assert axes.get_xscale() == "asinh"
    normal_bars = [p for p in axes.containers[0] if p.get_height() > 0]
    assert len(normal_bars) >= 15, "normal scores spread over many bars"
    marks = [text.get_text() for text in axes.texts]
    assert marks == [f"warn\n{thresholds['warn']:.4g}", f"critical\n{thresholds['critical']:.4g}"]
    # the two lines are apart on screen, not drawn over each other
    lines = [axes.transData.transform((line.get_xdata()[0], 0))[0] for line in axes.lines]
    assert abs(lines[0] - lines[1]) > 5
