"""Would neighbour distances beside the ELBO beat KNN? Measured on the fitted default models.

Issue 10's directions "neighbours in the VAE's latent space" and "density model + neighbours,
combined through the calibration set", evaluated without refitting anything: for each (data set,
seed) the default detector of the detection protocol (../shared/bench/PROTOCOL.md; the same fitted
artifact that `bench.explanations` / `bench.calibration` cache) scores the test rows, and these
variants are computed from it:

- `elbo`: the default score, -ELBO;
- `knn`: the KNN reference exactly as `bench.detection` runs PyOD's KNN (distance to the 5th
  nearest train row, columns constant on train dropped, standardised on train);
- `elbo+knn`, `elbo+latent`: the -ELBO plus the 5-NN distance in input space (standardised, as
  KNN) or in the VAE's latent space (posterior means), each score robust-scaled on the calibration
  rows ((s - median) / IQR) and summed. The neighbour set is the detector's own train + validation
  rows, so the calibration rows (which never took part in training) are scored like new rows;
- `max:elbo,knn`, `max:elbo,knn,latent`: the largest of the robust-scaled scores (a min-p rule:
  an input is as anomalous as its most confident detector says);
- `fisher:elbo+knn`: Fisher's combination -2 (log p_elbo + log p_knn) of the two conformal p-values
  on the calibration rows (ties, frequent beyond the largest calibration score, broken by the
  robust-scaled sum): this keeps exact calibrated p-values for the combined score.

A variant is worth landing as the default only if it beats `knn` and `elbo` on both folds of
`bench.folds` with three seeds.

    python -m bench.neighbours --cache /tmp/vae-cache --out /tmp/neighbours.json
    python -m bench.neighbours --report-only /tmp/neighbours.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

from bench.detection import (
    dataset_name,
    load_dataset,
    per_dataset_seed_main,
    protocol_split,
    reference_preprocess,
    say,
)
from bench.explanations import array_columns, fit_or_load
from bench.folds import FOLDS
from vae_anomaly.training.data import split_rows
from vae_anomaly.training.trainer import TrainConfig

K = 5
VARIANTS = ("elbo", "knn", "elbo+knn", "elbo+latent", "fisher:elbo+knn", "max:elbo,knn", "max:elbo,knn,latent")


def kth_distance(reference: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Distance of each query row to its k-th nearest reference row (PyOD KNN's 'largest')."""
    return NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(queries)[0][:, -1]


def robust(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(s - median) / IQR of the calibration scores (IQR floored so a flat score cannot divide by 0)."""
    q1, median, q3 = np.percentile(calibration, [25, 50, 75])
    return (scores - median) / max(q3 - q1, 1e-12)


def conformal(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{calibration >= s}) / (n + 1) for each score."""
    ordered = np.sort(calibration)
    above = ordered.size - np.searchsorted(ordered, scores, side="left")
    return (1.0 + above) / (ordered.size + 1.0)


def evaluate(path: Path, seed: int, cache: Path | None) -> dict[str, Any]:
    x, y = load_dataset(path)
    split = protocol_split(x, y, seed)
    name = dataset_name(path)
    detector = fit_or_load(cache, f"{name}-seed{seed}", array_columns(split.x_train), seed)
    config = TrainConfig(seed=seed)
    rows = split_rows(len(split.x_train), config.validation_fraction, config.calibration_fraction, seed)
    fitted = np.concatenate([rows.train, rows.validation])
    kind = detector.kind

    def terms(x_rows: np.ndarray):
        return detector.terms(kind.columns_from_table(array_columns(x_rows)))

    test, cal, ref = terms(split.x_test), terms(split.x_train[rows.calibration]), terms(split.x_train[fitted])
    z_train, z_test, _ = reference_preprocess(split.x_train, split.x_test)
    knn_test = kth_distance(z_train, z_test)
    # The neighbour score of the combinations: against the detector's own fitted rows.
    z_fit, z_cal = z_train[fitted], z_train[rows.calibration]
    near_test, near_cal = kth_distance(z_fit, z_test), kth_distance(z_fit, z_cal)
    lat_test = kth_distance(ref.latent_mean, test.latent_mean)
    lat_cal = kth_distance(ref.latent_mean, cal.latent_mean)
    elbo_test, elbo_cal = test.score, cal.score
    sum_knn = robust(elbo_cal, elbo_test) + robust(near_cal, near_test)
    fisher = -2 * (np.log(conformal(elbo_cal, elbo_test)) + np.log(conformal(near_cal, near_test)))
    scaled = [robust(elbo_cal, elbo_test), robust(near_cal, near_test), robust(lat_cal, lat_test)]
    scores = {
        "max:elbo,knn": np.maximum(scaled[0], scaled[1]),
        "max:elbo,knn,latent": np.max(np.stack(scaled), axis=0),
        "elbo": elbo_test,
        "knn": knn_test,
        "elbo+knn": sum_knn,
        "elbo+latent": robust(elbo_cal, elbo_test) + robust(lat_cal, lat_test),
    }
    # Fisher ties beyond the calibration range are common: break them by the robust sum exactly.
    order = np.lexsort((sum_knn, fisher))
    ranked = np.empty(order.size)
    ranked[order] = np.arange(order.size)
    scores["fisher:elbo+knn"] = ranked
    out = {"dataset": name, "seed": seed}
    for variant, s in scores.items():
        out[variant] = {
            "auroc": float(roc_auc_score(split.y_test, s)),
            "auprc": float(average_precision_score(split.y_test, s)),
        }
    return out


def fold_of(name: str) -> str:
    return next((fold for fold, names in FOLDS.items() if name in names), "?")


def report(results: dict[str, Any]) -> None:
    records = results["records"]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_set.setdefault(r["dataset"], []).append(r)
    say("| data set | fold | " + " | ".join(VARIANTS) + " |")
    say("|---|---|" + "---|" * len(VARIANTS))
    means: dict[str, dict[str, list[float]]] = {}
    for name in sorted(by_set, key=lambda n: (fold_of(n), n.lower())):
        rows = by_set[name]
        cells = []
        for v in VARIANTS:
            value = float(np.mean([r[v]["auroc"] for r in rows]))
            means.setdefault(fold_of(name), {}).setdefault(v, []).append(value)
            means.setdefault("all", {}).setdefault(v, []).append(value)
            cells.append(f"{value:.3f}")
        say(f"| {name} | {fold_of(name)} | " + " | ".join(cells) + f" |  ({len(rows)} seeds)")
    say()
    for group in ("A", "B", "all"):
        if group in means:
            text = ", ".join(f"{v} {np.mean(values):.4f}" for v, values in means[group].items())
            say(f"mean AUROC, fold {group} ({len(means[group]['elbo'])} sets): {text}")


def main(argv: list[str] | None = None) -> int:
    return per_dataset_seed_main(
        argv,
        description=__doc__,
        default_out="neighbours.json",
        evaluate=evaluate,
        describe=lambda record: (
            f"{record['dataset']} seed {record['seed']}: "
            + ", ".join(f"{v} {record[v]['auroc']:.3f}" for v in VARIANTS)
        ),
        report=report,
    )


if __name__ == "__main__":
    raise SystemExit(main())
