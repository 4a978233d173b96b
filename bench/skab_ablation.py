"""SKAB ablation of the sequence defaults' threshold path: where the false alarms come from.

Stage 1 (the expensive part, cached per file, seed and training variant): fit the sequence
detector (`training.sequence.fit_sequence_detector`, what `vae-anomaly train --kind sequence` runs)
on a file's 400 training rows and keep the score of the window closing at every row; also fit K
*fold models*, each on the training rows without one contiguous block of them (the two sides as
two series, so no window crosses the gap), and keep each block's out-of-fold window scores.

Stage 2 (cheap, from the cache): for each threshold rule, a calibration source (`last`: the
default's last 20 % of the training rows scored by the model; `oof`: every block's windows scored
by the fold model that did not see it) and a row aggregation (the row's score is the mean, median
or minimum of the window scores of the `k` windows closing at it and the `k - 1` rows before it:
online, never a later row), apply the same aggregation to the calibration windows, threshold at
the target FPR, and report SKAB's pooled F1 / FAR / MAR and AUROC per seed and their means.

    python -m bench.skab_ablation --fold A --seeds 0 1 2 --cache /tmp/skab_cache --out /tmp/abl_A.json
    python -m bench.skab_ablation --fold A --variant gru:architecture=recurrent ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.sequences import DEFAULT_DATA, TRAIN_ROWS, load_skab, parse_overrides, skab_files
from bench.skab_folds import FOLDS
from vae_anomaly.model.thresholds import sort_calibration, threshold_for_fpr
from vae_anomaly.training.sequence import calibration_stride_for

BLOCKS = 5
TARGET_FPR = 0.01


def _fit(values: np.ndarray, sensors: list[str], options: dict[str, Any], bounds: np.ndarray | None = None) -> Any:
    from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config

    # held_out: this harness cross-fits itself (stage one), from the same fold fits for every rule
    config = sequence_train_config(device="cpu", **{"calibration": "held_out", **options})
    return fit_sequence_detector(values, sensors, config, bounds=bounds, progress=False)


def _window_scores(detector: Any, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score of the window closing at each row of `values` (-inf before the first full window),
    and each window's per-step reconstruction terms -log p(x_t | z = mu) summed over sensors (N, T)."""
    inputs = detector.kind.inputs_from_rows(values)
    window = detector.kind.window
    out = np.full(len(values), -np.inf)
    steps = np.full((len(values), window), -np.inf)
    terms = detector.terms(inputs)
    out[inputs.rows] = terms.score
    steps[inputs.rows] = terms.contributions.reshape(len(inputs), window, -1).sum(axis=2)
    return out, steps


def stage_one(path: Path, seed: int, options: dict[str, Any], blocks: int) -> dict[str, Any]:
    values, labels, sensors = load_skab(path)
    train = values[:TRAIN_ROWS]
    started = time.perf_counter()
    result = _fit(train, sensors, {"seed": seed, **options})
    fit_seconds = time.perf_counter() - started
    detector = result.detector
    window = detector.kind.window
    rows, steps = _window_scores(detector, values)
    edges = np.linspace(0, TRAIN_ROWS, blocks + 1).round().astype(int)
    oof, oof_steps = [], []
    for lo, hi in itertools.pairwise(edges) if blocks else []:
        keep = np.concatenate([train[:lo], train[hi:]])
        bounds = np.array(sorted({0, lo, len(keep)}), dtype=np.int64)
        fold = _fit(keep, sensors, {"seed": seed, **options}, bounds).detector
        block, block_steps = _window_scores(fold, train[lo:hi])
        oof.append(block[window - 1 :])
        oof_steps.append(block_steps[window - 1 :])
    return {
        "rows": rows,
        "labels": labels,
        "oof": np.stack(oof) if oof else np.zeros((0, 0)),
        "steps": steps,
        "oof_steps": np.stack(oof_steps) if oof_steps else np.zeros((0, 0, 0)),
        "calibration": np.asarray(detector.thresholds.calibration),
        "window": window,
        "best_epoch": result.summary["best_epoch"],
        "fit_seconds": fit_seconds,
    }


def cached(cache: Path, variant: str, seed: int, path: Path, options: dict[str, Any], blocks: int) -> dict[str, Any]:
    target = cache / variant / f"s{seed}_{path.parent.name}_{path.stem}.npz"
    if target.exists():
        with np.load(target) as data:
            return {k: data[k] for k in data.files}
    out = stage_one(path, seed, options, blocks)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(target, **out)
    print(f"{variant} s{seed} {path.parent.name}/{path.stem} fit {out['fit_seconds']:.1f}s "
          f"best {int(out['best_epoch'])}", flush=True)  # fmt: skip
    return out


def aggregate(scores: np.ndarray, k: int, how: str) -> np.ndarray:
    """Online aggregate over the last k values (the value itself and the k - 1 before it); -inf
    where fewer than k finite values precede (inclusive)."""
    if k == 1 or how == "none":
        return scores.copy()
    n = len(scores)
    out = np.full(n, -np.inf)
    if n < k:
        return out
    view = np.lib.stride_tricks.sliding_window_view(scores, k)  # (n - k + 1, k)
    finite = np.isfinite(view).all(axis=1)
    safe = np.where(np.isfinite(view), view, 0.0)
    reduce = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max}[how]
    out[k - 1 :] = np.where(finite, reduce(safe, axis=1), -np.inf)
    return out


def _pick(entry: dict[str, Any], score: str) -> tuple[np.ndarray, np.ndarray]:
    """(row scores (N,), out-of-fold block scores (K, n)) of one score: `window` (the family's
    score of the window), `recon` (its reconstruction terms at z = mu) or `lastM` (those of the
    window's last M steps only)."""
    if score == "window":
        return entry["rows"], entry["oof"]
    m = entry["steps"].shape[1] if score == "recon" else int(score.removeprefix("last"))
    rows = entry["steps"][:, -m:].sum(axis=1)
    oof = entry["oof_steps"][..., -m:].sum(axis=-1) if entry["oof_steps"].size else entry["oof"]
    return rows, oof


def apply_rule(
    entry: dict[str, Any], source: str, how: str, k: int, score: str = "window"
) -> tuple[np.ndarray, np.ndarray, float]:
    """(test labels, test row scores, threshold) of one file under one rule."""
    all_rows, oof = _pick(entry, score)
    rows = aggregate(all_rows, k, how)
    window = int(entry["window"])
    n_cal = round(TRAIN_ROWS * 0.2)
    cal_rows = all_rows[TRAIN_ROWS - n_cal + window - 1 : TRAIN_ROWS]
    if source == "last":
        calibration = aggregate(cal_rows, k, how)
    elif source == "heldout":  # validation and calibration rows: no window of them was trained on
        calibration = aggregate(all_rows[round(TRAIN_ROWS * 0.7) + window - 1 : TRAIN_ROWS], k, how)
    elif source == "oof":
        calibration = np.concatenate([aggregate(block, k, how) for block in oof])
    elif source == "oof_stride":  # every block's windows at `calibration_stride_for`'s step
        pairs = np.array([[0, TRAIN_ROWS // len(oof)]] * len(oof))
        stride = calibration_stride_for(pairs, window, TARGET_FPR)
        calibration = np.concatenate([aggregate(block, k, how)[::stride] for block in oof])
    elif source == "oof+last":
        calibration = np.concatenate([*(aggregate(block, k, how) for block in oof[:-1]), aggregate(cal_rows, k, how)])
    else:
        raise ValueError(source)
    calibration = sort_calibration(calibration[np.isfinite(calibration)])
    threshold = threshold_for_fpr(calibration, TARGET_FPR)
    return entry["labels"][TRAIN_ROWS:], rows[TRAIN_ROWS:], threshold


def pooled(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> dict[str, float]:
    y = np.concatenate([p[0] for p in parts])
    s = np.concatenate([p[1] for p in parts])
    pred = np.concatenate([(p[1] > p[2]).astype(int) for p in parts])
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    finite_min = np.min(s[np.isfinite(s)])
    per_file = [roc_auc_score(p[0], np.maximum(p[1], finite_min)) for p in parts if 0 < p[0].sum() < len(p[0])]
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "far": 100 * fp / max(fp + tn, 1),
        "mar": 100 * fn / max(fn + tp, 1),
        "auroc": float(roc_auc_score(y, np.maximum(s, finite_min))),
        "auroc_file": float(np.mean(per_file)),
    }


RULES = [
    (source, how, k, score)
    for source in ("last", "heldout", "oof", "oof_stride")
    for score in ("window", "recon", "last1", "last3", "last5")
    for how, ks in (("none", [1]), ("mean", [5, 15]), ("median", [15]), ("min", [5]))
    for k in ks
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.skab_ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--fold", choices=sorted(FOLDS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME:OPTIONS",
        help="a training variant (options as bench.sequences --set); 'default' always runs",
    )  # fmt: skip
    parser.add_argument("--blocks", type=int, default=BLOCKS)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    variants = {"default": {}, **{n: parse_overrides(o) for n, o in (v.split(":", 1) for v in args.variant)}}
    files = skab_files(args.data, FOLDS[args.fold])
    table: dict[str, dict[str, Any]] = {}
    for name, options in variants.items():
        entries = {s: [cached(args.cache, name, s, p, options, args.blocks) for p in files] for s in args.seeds}
        for source, how, k, score in RULES:
            if source.startswith("oof") and not all(len(e["oof"]) for es in entries.values() for e in es):
                continue
            if score != "window" and not all("steps" in e for es in entries.values() for e in es):
                continue
            per_seed = [pooled([apply_rule(e, source, how, k, score) for e in entries[seed]]) for seed in args.seeds]
            mean = {key: float(np.mean([m[key] for m in per_seed])) for key in per_seed[0]}
            mean["f1_sd"] = float(np.std([m["f1"] for m in per_seed]))
            mean["far_sd"] = float(np.std([m["far"] for m in per_seed]))
            label = f"{name} {source} {score} {how}{k if how != 'none' else ''}"
            table[label] = mean
            print(f"{args.fold} {label:28s} F1 {mean['f1']:.3f}±{mean['f1_sd']:.3f} FAR {mean['far']:5.2f}"
                  f"±{mean['far_sd']:.2f} MAR {mean['mar']:5.2f} AUROC {mean['auroc']:.3f} "
                  f"file {mean['auroc_file']:.3f}", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"fold": args.fold, "seeds": args.seeds, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
