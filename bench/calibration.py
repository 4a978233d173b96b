"""Threshold benchmark: does `warn` (target FPR 1 %) flag about 1 % of normal rows nobody trained on?

For each ADBench set and seed, the default detector (`vae-anomaly train` with no flags, fitted on
the protocol's train rows as in ../shared/bench/PROTOCOL.md) scores the protocol's test normals
(40 % of the normal rows, never seen in training or calibration). The realised false-positive rate
of a threshold is the share of those rows whose score exceeds it. Issue 10's goal over the
18 sets × 3 seeds: the mean realised FPR of `warn` within [0.7 %, 1.3 %], its 90th percentile ≤ 2.5 %.

    python -m bench.calibration --out /tmp/calibration.json --cache /tmp/vae-cache
    python -m bench.calibration --report-only /tmp/calibration.json

`--cache` is shared with `bench.explanations` (one artifact directory per data set and seed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.detection import (
    dataset_name,
    load_dataset,
    per_dataset_seed_main,
    protocol_split,
    say,
)
from bench.explanations import array_columns, fit_or_load

GOAL_MEAN = (0.007, 0.013)
GOAL_P90 = 0.025


def realised_rates(path: Path, seed: int, cache: Path | None) -> dict[str, Any]:
    """Realised FPR of every threshold on the test normals of one (data set, seed)."""
    x, y = load_dataset(path)
    split = protocol_split(x, y, seed)
    detector = fit_or_load(cache, f"{dataset_name(path)}-seed{seed}", array_columns(split.x_train), seed)
    normal = detector.kind.columns_from_table(array_columns(split.x_test[split.y_test == 0]))
    scores = detector.score(normal).terms.score
    thresholds = detector.thresholds.thresholds
    return {
        "dataset": dataset_name(path),
        "seed": seed,
        "calibration_rows": len(detector.manifest.calibration_scores),
        "test_normals": int(scores.size),
        "targets": {name: t.target_fpr for name, t in thresholds.items()},
        "realised": {name: float(np.mean(scores > t.value)) for name, t in thresholds.items()},
    }


def summary(records: list[dict[str, Any]], name: str) -> dict[str, float]:
    rates = np.array([r["realised"][name] for r in records if name in r["realised"]])
    return {
        "mean": float(rates.mean()),
        "p90": float(np.percentile(rates, 90)),
        "max": float(rates.max()),
        "n": int(rates.size),
    }


def report(results: dict[str, Any]) -> None:
    records = results["records"]
    names = list(records[0]["realised"])
    say("| data set | calibration rows | " + " | ".join(f"{n} realised FPR (seeds)" for n in names) + " |")
    say("|---|---|" + "---|" * len(names))
    by_set: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_set.setdefault(r["dataset"], []).append(r)
    for dataset, rows in by_set.items():
        cal = "/".join(str(r["calibration_rows"]) for r in rows)
        cells = [" / ".join(f"{100 * r['realised'][n]:.2f}" for r in rows) for n in names]
        say(f"| {dataset} | {cal} | " + " | ".join(cells) + " |")
    say()
    for n in names:
        s = summary(records, n)
        target = records[0]["targets"][n]
        goal = f"target {100 * target:g} %" if target else "set by value"
        say(
            f"{n} ({goal}): mean realised {100 * s['mean']:.2f} %, "
            f"90th percentile {100 * s['p90']:.2f} %, max {100 * s['max']:.2f} % over {s['n']} (data set, seed)"
        )
    warn = summary(records, "warn")
    met = GOAL_MEAN[0] <= warn["mean"] <= GOAL_MEAN[1] and warn["p90"] <= GOAL_P90
    say(f"goal (warn mean in [0.7 %, 1.3 %], p90 <= 2.5 %): {'met' if met else 'NOT met'}")


def timed_rates(path: Path, seed: int, cache: Path | None) -> dict[str, Any]:
    """`realised_rates` with its wall time in the record."""
    started = time.perf_counter()
    record = realised_rates(path, seed, cache)
    record["seconds"] = time.perf_counter() - started
    return record


def main(argv: list[str] | None = None) -> int:
    return per_dataset_seed_main(
        argv,
        description=__doc__,
        default_out="calibration.json",
        evaluate=timed_rates,
        describe=lambda record: (
            f"{record['dataset']} seed {record['seed']}: warn {100 * record['realised']['warn']:.2f} %"
        ),
        report=report,
    )


if __name__ == "__main__":
    raise SystemExit(main())
