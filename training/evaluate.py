"""Detection metrics on labelled data (AUROC, AUPRC, precision/recall/F1 at each threshold) and a
small report: score histograms with the thresholds drawn, the ROC curve, and a Markdown page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def detection_metrics(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float]) -> dict[str, object]:
    """labels: 1 = anomaly, 0 = normal; scores: higher = more anomalous; a record is flagged when
    score > threshold, exactly as in scoring."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # not loaded by `serve`

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    both = 0 < labels.sum() < labels.size
    result: dict[str, object] = {
        "rows": int(labels.size),
        "anomalies": int(labels.sum()),
        "auroc": float(roc_auc_score(labels, scores)) if both else None,
        "auprc": float(average_precision_score(labels, scores)) if both else None,
    }
    at = {}
    for name, value in thresholds.items():
        flagged = scores > value
        tp = int(np.sum(flagged & (labels == 1)))
        fp = int(np.sum(flagged & (labels == 0)))
        fn = int(np.sum(~flagged & (labels == 1)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        normals = int(np.sum(labels == 0))
        at[name] = {
            "threshold": float(value),
            "flagged": int(flagged.sum()),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "false_positive_rate": fp / normals if normals else None,
        }
    result["thresholds"] = at
    return result


def asinh_scale(scores: np.ndarray) -> float:
    """The linear width of the asinh axis: about the spread of the bulk of the scores, so normal
    scores (tens of nats) stay linear and readable while a tail to 10^4 and beyond is compressed
    logarithmically (a linear axis put every normal score in one bar)."""
    if scores.size == 0:
        return 1.0
    low, high = np.percentile(scores, [5, 50])
    return float(max(abs(high - low), 1e-3))


def histogram_bins(scores: np.ndarray, scale: float, n_bins: int = 60) -> np.ndarray:
    """Bin edges equally spaced in asinh(score / scale) from the smallest to the largest score."""
    if scores.size == 0:
        return np.linspace(0.0, 1.0, n_bins + 1)
    low, high = np.arcsinh(np.array([scores.min(), scores.max()]) / scale)
    if high <= low:
        high = low + 1e-6
    return np.sinh(np.linspace(low, high, n_bins + 1)) * scale


def histogram_figure(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float], title: str) -> Any:
    """Score histogram per class on an asinh axis (linear near the bulk, logarithmic in the tail),
    each threshold a dashed line with its name and value written beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = asinh_scale(scores)
    bins = histogram_bins(scores, scale)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, name in ((0, "normal"), (1, "anomaly")):
        if np.any(labels == label):  # an empty class would be a 0/0 density (a RuntimeWarning)
            axes.hist(scores[labels == label], bins=bins.tolist(), alpha=0.6, label=name)
    axes.set_xscale("asinh", linear_width=scale)
    colors = ["tab:orange", "tab:red", "tab:purple", "tab:brown"]
    for k, ((name, value), color) in enumerate(zip(thresholds.items(), colors, strict=False)):
        axes.axvline(value, color=color, linestyle="--", label=f"{name} = {value:.2f}")
        axes.annotate(
            f"{name}\n{value:.4g}",
            xy=(value, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12 - 22 * k),  # staggered, so two close thresholds stay readable
            textcoords="offset points",
            color=color,
            fontsize=8,
            va="top",
        )
    axes.set_xlabel(f"score (negative ELBO, nats; asinh axis, linear within ±{scale:.3g})")
    axes.set_yscale("log")  # a few anomalies next to thousands of normal inputs
    axes.set_ylabel("inputs (log scale)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    return figure


def write_report(
    directory: Path, scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float], metrics: dict, title: str
) -> list[Path]:
    """Write histogram.png, roc.png and report.md into `directory`; returns the paths written."""
    import matplotlib
    from sklearn.metrics import roc_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    figure = histogram_figure(scores, labels, thresholds, title)
    histogram = directory / "histogram.png"
    figure.savefig(histogram, dpi=110)
    plt.close(figure)

    paths = [histogram]
    if metrics.get("auroc") is not None:
        fpr, tpr, _ = roc_curve(labels, scores)
        figure, axes = plt.subplots(figsize=(4.5, 4.5))
        axes.plot(fpr, tpr, label=f"AUROC {metrics['auroc']:.3f}")
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axes.set_xlabel("false-positive rate")
        axes.set_ylabel("true-positive rate")
        axes.legend(loc="lower right")
        figure.tight_layout()
        roc = directory / "roc.png"
        figure.savefig(roc, dpi=110)
        plt.close(figure)
        paths.append(roc)

    auroc, auprc = metrics.get("auroc"), metrics.get("auprc")
    lines = [
        f"# {title}",
        "",
        f"Rows: {metrics['rows']}, anomalies: {metrics['anomalies']}.",
        f"AUROC: {auroc:.4f}, AUPRC: {auprc:.4f}." if auroc is not None else "AUROC/AUPRC: need both classes.",
        "",
        "| threshold | value | flagged | precision | recall | F1 | FPR |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in metrics["thresholds"].items():
        fpr_text = f"{row['false_positive_rate']:.4f}" if row["false_positive_rate"] is not None else "–"
        lines.append(
            f"| {name} | {row['threshold']:.3f} | {row['flagged']} | {row['precision']:.3f} | {row['recall']:.3f} "
            f"| {row['f1']:.3f} | {fpr_text} |"
        )
    lines += ["", "![score histogram](histogram.png)"]
    if len(paths) > 1:
        lines.append("![ROC curve](roc.png)")
    report = directory / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return [*paths, report]


def model_metrics(detector: Any, scores: np.ndarray, labels: np.ndarray) -> tuple[dict[str, object], dict[str, float]]:
    """`detection_metrics` at the detector's own thresholds, tagged with the model's id and version;
    also returns the thresholds (name → value) for the report."""
    thresholds = {name: t.value for name, t in detector.thresholds.thresholds.items()}
    metrics = detection_metrics(scores, labels, thresholds)
    metrics["model"] = {"id": detector.manifest.model_id, "version": detector.manifest.version}
    return metrics, thresholds
