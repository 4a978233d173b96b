"""The only place metric names appear. One registry per app, so tests never share counters."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999)


def score_buckets(calibration: np.ndarray, thresholds: list[float]) -> list[float]:
    """Histogram buckets at calibration quantiles and at the thresholds: fine where normal scores
    lie, with edges exactly at the decision points, plus a few wider ones for far outliers."""
    quantiles = np.quantile(calibration, SCORE_QUANTILES).tolist()
    top = max([*quantiles, *thresholds])
    spread = max(top - float(np.min(calibration)), 1.0)
    edges = sorted({round(v, 6) for v in [*quantiles, *thresholds, top + spread, top + 4 * spread, top + 16 * spread]})
    return edges


class ServiceMetrics:
    """Counters, histograms and gauges of one app instance."""

    def __init__(
        self, calibration: np.ndarray, thresholds: dict[str, float], registry: CollectorRegistry | None = None
    ):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vae_anomaly_requests", "HTTP requests by route template and status.", ["endpoint", "status"], registry=r
        )
        self.duration = Histogram(
            "vae_anomaly_request_duration_seconds",
            "HTTP request latency by route template.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.records_scored = Counter(
            "vae_anomaly_records_scored", "Records scored through /score (not warm-up, not /reconstruct).", registry=r
        )
        self.anomalies = Counter(
            "vae_anomaly_anomalies", "Records scored above each threshold.", ["threshold"], registry=r
        )
        self.score = Histogram(
            "vae_anomaly_score",
            "Anomaly scores of records scored through /score (negative ELBO, nats).",
            buckets=score_buckets(calibration, list(thresholds.values())),
            registry=r,
        )
        self.threshold = Gauge("vae_anomaly_threshold", "Current value of each threshold.", ["name"], registry=r)
        self.model_info = Gauge(
            "vae_anomaly_model_info", "The loaded model.", ["model_id", "version", "kind", "device"], registry=r
        )
        self.set_thresholds(thresholds)

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """Publish threshold values and make sure every threshold's anomaly counter exists (at 0)."""
        for name, value in thresholds.items():
            self.threshold.labels(name=name).set(value)
            self.anomalies.labels(threshold=name)

    def set_model(self, model_id: str, version: str, kind: str, device: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model_id=model_id, version=version, kind=kind, device=device).set(1)

    def observe_scores(self, scores: np.ndarray, exceeded: np.ndarray, names: tuple[str, ...]) -> None:
        """Count a scored batch: records, per-threshold anomalies, and the score distribution."""
        self.records_scored.inc(len(scores))
        counts = exceeded.sum(axis=0)
        for name, count in zip(names, counts.tolist(), strict=True):
            if count:
                self.anomalies.labels(threshold=name).inc(count)
        for value in scores.tolist():
            self.score.observe(value)
