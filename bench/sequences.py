"""SKAB benchmark: the project's sequence model beside PCA T²+Q and IForest on windows.

Implements the sequence part of ../shared/bench/PROTOCOL.md (SKAB's own leaderboard protocol,
"outlier detection", test-set evaluation): for each of the 34 files with anomalies, the first 400
rows (time order) are the training data and the rest the test data; every detector is fitted per
file on those 400 rows without labels (its own scaling, windowing and threshold), then labels
every test row 0/1 from the window that closes at the row (online: never a later row). Pooled
point-wise F1 of `anomaly`, FAR = FP / (FP + TN) and MAR = FN / (FN + TP) over the concatenated
test rows, plus AUROC of the row scores pooled and per file; train and score seconds per file.

The references see exactly the project's split: the same standardisation (training rows' mean and
std), the same windows of the 400 rows cut in time order into train / validation / calibration,
and a conformal threshold at the same target false-positive rate on the same calibration windows.

    python -m bench.sequences --out /tmp/skab.json --markdown /tmp/skab.md
    python -m bench.sequences --files valve1/0 other/3 --methods project pca
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_auc_score

from vae_anomaly.model.kinds.sequence.preprocessing import fit_scaling
from vae_anomaly.model.kinds.sequence.windows import closing_windows, gather_windows, segment_bounds
from vae_anomaly.model.thresholds import sort_calibration, threshold_for_fpr
from vae_anomaly.training.sequence import calibration_stride_for
from vae_anomaly.training.sequence_calibration import fold_blocks, without_block
from vae_anomaly.training.sequence_data import pair_starts, split_windows, time_split_bounds

DEFAULT_DATA = Path("../shared/datasets/skab")
FOLDERS = ("valve1", "valve2", "other")
TRAIN_ROWS = 400
LABELS = ("anomaly", "changepoint")
SKAB_LEADERBOARD = [  # SKAB README, outlier detection, test-set evaluation: (name, F1, FAR %, MAR %)
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.98),
    ("LSTM-AE", 0.74, 21.51, 34.47),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla AE", 0.39, 6.43, 72.78),
    ("Isolation forest", 0.29, 2.56, 82.89),
]

logger = logging.getLogger(__name__)


class Fitted(Protocol):
    """A detector fitted on one file's training rows."""

    threshold: float

    def score_rows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (n,) of the rows that close a window of `values` (N, C), and those rows (n,)."""
        ...


@dataclass
class Protocol_:
    """The knobs every detector of a run shares (same windows, same split, same threshold rule)."""

    window: int = 30
    stride: int = 1
    calibration_stride: int = 1
    validation_fraction: float = 0.1
    calibration_fraction: float = 0.2
    target_fpr: float = 0.01
    calibration: str = "held_out"
    calibration_folds: int = 5
    cross_fit_stride: int = 1


def skab_files(data: Path, wanted: list[str] | None) -> list[Path]:
    """The 34 files with anomalies, in folder then numeric order; `wanted` like ["valve1/0"]."""
    files = [
        path
        for folder in FOLDERS
        for path in sorted((data / folder).glob("*.csv"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    ]
    if not files:
        raise SystemExit(f"{data}: no SKAB files in {', '.join(FOLDERS)}")
    if wanted:
        files = [p for p in files if f"{p.parent.name}/{p.stem}" in wanted]
    return files


def load_skab(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sensor values (N, C) in time order, the `anomaly` labels (N,), and the sensor names."""
    import pandas as pd

    frame = pd.read_csv(path, sep=";", index_col="datetime", parse_dates=True).sort_index(kind="stable")
    labels = frame["anomaly"].to_numpy().astype(np.int64)
    sensors = frame.drop(columns=list(LABELS))
    return sensors.to_numpy(dtype=np.float64), labels, [str(c) for c in sensors.columns]


class WindowReference:
    """A scikit-learn style detector on flattened windows, under the project's split and threshold
    (held-out or cross-fitted calibration, as the project's detector of the run calibrates)."""

    def __init__(self, make: Callable[[], Any], score: Callable[[Any, np.ndarray], np.ndarray], proto: Protocol_):
        self.make, self.score, self.proto = make, score, proto

    def _fit_once(self, values: np.ndarray, sensors: list[str], bounds: np.ndarray) -> tuple[Any, Any, np.ndarray]:
        """(scaling, model, calibration windows) fitted on the train + validation part of each series."""
        p = self.proto
        train_pairs, _, _ = time_split_bounds(bounds, p.validation_fraction, p.calibration_fraction)
        train_rows = np.concatenate([np.arange(lo, hi) for lo, hi in train_pairs.reshape(-1, 2).tolist()])
        scaling = fit_scaling(sensors, values[train_rows])
        z, _ = scaling.standardize(values)
        split = split_windows(
            z, bounds, p.window, p.stride, p.calibration_stride, p.validation_fraction, p.calibration_fraction
        )
        fit_windows = np.concatenate([split.train, split.validation])
        return scaling, self.make().fit(fit_windows.reshape(len(fit_windows), -1)), split.calibration

    def _flat_scores(self, scaling: Any, model: Any, windows: np.ndarray) -> np.ndarray:
        z, _ = scaling.standardize(windows)
        return np.asarray(self.score(model, z.reshape(len(z), -1)))

    def fit(self, values: np.ndarray, sensors: list[str]) -> WindowReference:
        p = self.proto
        bounds = segment_bounds(None, len(values))
        self.scaling, self.model, calibration_windows = self._fit_once(values, sensors, bounds)
        if p.calibration == "cross_fit":
            scores = []
            for block in fold_blocks(bounds, p.calibration_folds):
                kept, kept_bounds = without_block(values, bounds, block)
                scaling, model, _ = self._fit_once(kept, sensors, kept_bounds)
                windows = gather_windows(values, pair_starts(block, p.window, p.cross_fit_stride), p.window)
                scores.append(self._flat_scores(scaling, model, windows))
            calibration = sort_calibration(np.concatenate(scores))
        else:
            flat = calibration_windows.reshape(len(calibration_windows), -1)
            calibration = sort_calibration(self.score(self.model, flat))
        self.threshold = threshold_for_fpr(calibration, p.target_fpr)
        return self

    def score_rows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, _ = self.scaling.standardize(values)
        starts, rows = closing_windows(segment_bounds(None, len(z)), self.proto.window)
        windows = gather_windows(z, starts, self.proto.window)
        return self.score(self.model, windows.reshape(len(windows), -1)), rows


class PCATSquaredQ:
    """PCA T² + Q (SPE) on windows: components explaining 90% of the variance; the score is
    T² / mean_train(T²) + Q / mean_train(Q), so neither statistic dominates by its scale."""

    def __init__(self, variance: float = 0.9):
        self.variance = variance

    def fit(self, x: np.ndarray) -> PCATSquaredQ:
        from sklearn.decomposition import PCA

        self.pca = PCA(n_components=self.variance, svd_solver="full").fit(x)
        t2, q = self._statistics(x)
        self.t2_scale, self.q_scale = max(t2.mean(), 1e-12), max(q.mean(), 1e-12)
        return self

    def _statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self.pca.transform(x)
        t2 = np.sum(t**2 / self.pca.explained_variance_, axis=1)
        q = np.sum((x - self.pca.inverse_transform(t)) ** 2, axis=1)
        return t2, q

    def decision(self, x: np.ndarray) -> np.ndarray:
        t2, q = self._statistics(x)
        return t2 / self.t2_scale + q / self.q_scale


def reference(method: str, proto: Protocol_, seed: int) -> WindowReference:
    if method == "pca":
        return WindowReference(PCATSquaredQ, lambda m, x: m.decision(x), proto)
    if method == "iforest":
        from sklearn.ensemble import IsolationForest

        return WindowReference(lambda: IsolationForest(random_state=seed), lambda m, x: -m.score_samples(x), proto)
    raise SystemExit(f"unknown method {method!r}")


@dataclass
class FileResult:
    method: str
    file: str
    y: np.ndarray  # test labels
    scores: np.ndarray  # test row scores (-inf where no window closes, never with 400 history rows)
    predicted: np.ndarray  # 0/1 at the detector's own threshold
    fit_seconds: float
    score_seconds: float

    @property
    def auroc(self) -> float | None:
        return float(roc_auc_score(self.y, self.scores)) if 0 < self.y.sum() < len(self.y) else None


def run_file(method: str, fit: Callable[[np.ndarray, list[str]], Fitted], path: Path) -> list[FileResult]:
    """The detector's result on one file, then one per threshold it derives beside its own
    (`derived_thresholds`: the same scores at another threshold, e.g. held-out calibration)."""
    values, labels, sensors = load_skab(path)
    started = time.perf_counter()
    fitted = fit(values[:TRAIN_ROWS], sensors)
    fitted_at = time.perf_counter()
    scores, rows = fitted.score_rows(values)  # windows may reach back into the training rows: online history
    score_seconds = time.perf_counter() - fitted_at
    row_scores = np.full(len(values), -np.inf)
    row_scores[rows] = scores
    test = slice(TRAIN_ROWS, None)
    main = FileResult(
        method=method,
        file=f"{path.parent.name}/{path.stem}",
        y=labels[test],
        scores=row_scores[test],
        predicted=(row_scores[test] > fitted.threshold).astype(np.int64),
        fit_seconds=fitted_at - started,
        score_seconds=score_seconds,
    )
    derived = getattr(fitted, "derived_thresholds", {})
    return [main] + [
        replace(main, method=name, predicted=(row_scores[test] > threshold).astype(np.int64))
        for name, threshold in derived.items()
    ]


def pooled_metrics(results: list[FileResult]) -> dict[str, float]:
    """SKAB's point-wise F1, FAR and MAR (%) over the concatenated test rows, and AUROCs."""
    y = np.concatenate([r.y for r in results])
    predicted = np.concatenate([r.predicted for r in results])
    scores = np.concatenate([r.scores for r in results])
    tp = int(np.sum((predicted == 1) & (y == 1)))
    fp = int(np.sum((predicted == 1) & (y == 0)))
    fn = int(np.sum((predicted == 0) & (y == 1)))
    tn = int(np.sum((predicted == 0) & (y == 0)))
    per_file = [r.auroc for r in results if r.auroc is not None]
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "far": 100 * fp / max(fp + tn, 1),
        "mar": 100 * fn / max(fn + tp, 1),
        "auroc_pooled": float(roc_auc_score(y, np.nan_to_num(scores, neginf=np.nanmin(scores[np.isfinite(scores)])))),
        "auroc_per_file_mean": float(np.mean(per_file)),
        "fit_seconds_per_file": float(np.mean([r.fit_seconds for r in results])),
        "score_seconds_per_file": float(np.mean([r.score_seconds for r in results])),
        "files": len(results),
    }


def markdown(summary: dict[str, dict[str, float]], per_file: dict[str, dict[str, float | None]], meta: dict) -> str:
    lines = [
        f"SKAB, {meta['files']} files, first {TRAIN_ROWS} rows train, rest test; window {meta['protocol']['window']}, "
        f"target FPR {meta['protocol']['target_fpr']}; seeds {meta.get('seeds', [0])} (mean ± sd); "
        f"variants {meta.get('variants') or 'none'}; command: `{meta['command']}`",
        "",
        "| detector | F1 | FAR % | MAR % | AUROC pooled | AUROC per file (mean) | train s/file | score s/file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, m in summary.items():
        lines.append(
            f"| {method} | {m['f1']:.3f} ± {m.get('f1_sd', 0):.3f} | {m['far']:.2f} ± {m.get('far_sd', 0):.2f} | "
            f"{m['mar']:.2f} ± {m.get('mar_sd', 0):.2f} | "
            f"{m['auroc_pooled']:.3f} ± {m.get('auroc_pooled_sd', 0):.3f} | "
            f"{m['auroc_per_file_mean']:.3f} | {m['fit_seconds_per_file']:.2f} | {m['score_seconds_per_file']:.3f} |"
        )
    for name, f1, far, mar in SKAB_LEADERBOARD:
        lines.append(f"| {name} (SKAB leaderboard) | {f1:.2f} | {far:.2f} | {mar:.2f} | | | | |")
    methods = list(summary)
    lines += ["", "AUROC per file:", "", "| file | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for file, row in per_file.items():
        cells = [f"{row[m]:.3f}" if row.get(m) is not None else "–" for m in methods]
        lines.append(f"| {file} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sequences", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"SKAB folder (default {DEFAULT_DATA})")
    parser.add_argument("--files", nargs="+", metavar="FOLDER/N", help="only these files, e.g. valve1/0 other/3")
    parser.add_argument("--methods", nargs="+", default=["project", "pca", "iforest"])
    parser.add_argument("--window", type=int, default=None, help="window of the references (default: the project's)")
    parser.add_argument("--set", dest="overrides", default="", help="project options, e.g. architecture=recurrent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", help="several seeds: metrics are means (± sd) over them")
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="NAME:OPTIONS",
        help="another project detector beside the default, e.g. 'ae:family=ae' or 'old:level=absolute'",
    )
    parser.add_argument("--out", type=Path, help="results JSON")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON", help="only merge the --out files of runs")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    return parser


def parse_overrides(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = json.loads(value) if value[:1] in "0123456789-[{" or value in ("true", "false") else value
    return out


class ProjectFitted:
    """The project's detector, trained by `training.sequence.fit_sequence_detector` (what
    `vae-anomaly train --kind sequence` runs) on one file's training rows."""

    def __init__(self, values: np.ndarray, sensors: list[str], options: dict[str, Any]):
        from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config

        config = sequence_train_config(device="cpu", **options)
        self.detector = fit_sequence_detector(values, sensors, config, progress=False).detector
        self.threshold = self.detector.thresholds.thresholds[self.detector.thresholds.active].value
        self.derived_thresholds: dict[str, float] = {}
        if self.detector.kind.config.calibration == "cross_fit":  # type: ignore[attr-defined]
            self.derived_thresholds["held_out"] = self._held_out_threshold(values, config)

    def _held_out_threshold(self, values: np.ndarray, config: Any) -> float:
        """The threshold `calibration=held_out` would have given this same network (same seed, same
        split: its scores are identical): the active target on the last rows' windows, at the
        stride `calibration_stride_for` gives them. Free beside the cross-fitted one."""
        from vae_anomaly.model.kinds.sequence.kind import SequenceInputs

        kind = self.detector.kind
        target = config.thresholds[config.active_threshold]
        _, _, cal_pairs = time_split_bounds(
            segment_bounds(None, len(values)), config.validation_fraction, config.calibration_fraction
        )
        options = config.kind_options_for("sequence")
        stride = options.calibration_stride or calibration_stride_for(cal_pairs, kind.window, target)
        starts = pair_starts(cal_pairs, kind.window, stride)
        inputs = SequenceInputs(gather_windows(values, starts, kind.window), starts + kind.window - 1)
        return threshold_for_fpr(sort_calibration(self.detector.terms(inputs).score), target)

    def score_rows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = self.detector.kind.inputs_from_rows(values)  # type: ignore[attr-defined]
        return self.detector.terms(inputs).score, inputs.rows


def project_fitter(overrides: dict[str, Any], seed: int) -> tuple[Callable[[np.ndarray, list[str]], Fitted], Protocol_]:
    """The default `vae-anomaly train --kind sequence` (plus `--set` overrides), and the protocol
    the references share with it: its window, and its calibration windows (`calibration_stride_for`)."""
    from vae_anomaly.model.kinds.sequence.kind import SequenceOptions

    options = {"seed": seed, **overrides}
    kind_options = SequenceOptions.model_validate(
        {k: v for k, v in options.items() if k in SequenceOptions.model_fields}
    )
    proto = Protocol_(window=kind_options.window, stride=kind_options.stride, target_fpr=0.01)
    _, _, cal_pairs = time_split_bounds(
        segment_bounds(None, TRAIN_ROWS), proto.validation_fraction, proto.calibration_fraction
    )
    proto.calibration_stride = kind_options.calibration_stride or calibration_stride_for(
        cal_pairs, proto.window, proto.target_fpr
    )
    proto.calibration, proto.calibration_folds = kind_options.calibration, kind_options.calibration_folds
    blocks = np.concatenate(fold_blocks(segment_bounds(None, TRAIN_ROWS), proto.calibration_folds))
    proto.cross_fit_stride = kind_options.calibration_stride or calibration_stride_for(
        blocks, proto.window, proto.target_fpr
    )
    return (lambda values, sensors: ProjectFitted(values, sensors, options)), proto


def mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the seeds' pooled metrics, and `<metric>_sd` (population sd) for
    F1, FAR, MAR and AUROC."""
    out = {key: float(np.mean([m[key] for m in per_seed])) for key in per_seed[0]}
    for key in ("f1", "far", "mar", "auroc_pooled", "auroc_per_file_mean"):
        out[f"{key}_sd"] = float(np.std([m[key] for m in per_seed]))
    out["seeds"] = len(per_seed)
    return out


def run_seed(
    args: argparse.Namespace, files: list[Path], seed: int, variants: dict[str, str]
) -> tuple[dict[str, list[FileResult]], Protocol_]:
    """Every method (and project variant) on every file with one seed."""
    project, proto = project_fitter(parse_overrides(args.overrides), seed)
    if args.window:
        proto.window = args.window
    runners: dict[str, Callable[[np.ndarray, list[str]], Fitted]] = {"project": project}
    for name, overrides in variants.items():
        runners[name] = project_fitter({**parse_overrides(args.overrides), **parse_overrides(overrides)}, seed)[0]
    for method in ("pca", "iforest"):
        runners[method] = lambda values, sensors, m=method: reference(m, proto, seed).fit(values, sensors)
    methods = [*args.methods, *variants]
    results: dict[str, list[FileResult]] = {m: [] for m in methods}
    for path in files:
        for method in methods:
            for result in run_file(method, runners[method], path):
                results.setdefault(result.method, []).append(result)
                print(
                    f"seed {seed} {result.file:10s} {result.method:8s} auroc {result.auroc or float('nan'):.3f} "
                    f"alarms {result.predicted.mean():.2f} anomalies {result.y.mean():.2f} "
                    f"fit {result.fit_seconds:.1f}s",
                    flush=True,
                )
    return results, proto


def raw_result(result: FileResult) -> dict[str, Any]:
    """A file's test labels, scores and alarms as JSON, so runs over parts of the files combine."""
    return {
        "file": result.file,
        "y": result.y.tolist(),
        "scores": [score if np.isfinite(score) else None for score in result.scores.tolist()],
        "predicted": result.predicted.tolist(),
        "fit_seconds": result.fit_seconds,
        "score_seconds": result.score_seconds,
    }


def from_raw(method: str, row: dict[str, Any]) -> FileResult:
    scores = np.array([-np.inf if v is None else v for v in row["scores"]], dtype=np.float64)
    return FileResult(
        method, row["file"], np.array(row["y"]), scores, np.array(row["predicted"]), row["fit_seconds"],
        row["score_seconds"],
    )  # fmt: skip


def combine(paths: list[Path], markdown_path: Path | None) -> int:
    """One table from runs side by side as separate processes (one seed, or some of the files,
    each): per seed, the files of all runs are pooled as in one run, then averaged over seeds."""
    runs = [json.loads(path.read_text()) for path in paths]
    by_seed: dict[str, dict[str, list[FileResult]]] = {}
    for run in runs:
        for seed, methods in run["rows"].items():
            for method, rows in methods.items():
                by_seed.setdefault(seed, {}).setdefault(method, []).extend(from_raw(method, r) for r in rows)
    methods = [m for m in runs[0]["summary"] if all(m in run["summary"] for run in runs)]  # those every run has
    order = {f"{p.parent.name}/{p.stem}": i for i, p in enumerate(skab_files(DEFAULT_DATA, None))}
    per_seed = {m: [pooled_metrics(results[m]) for results in by_seed.values()] for m in methods}
    summary = {m: mean_over_seeds(ms) for m, ms in per_seed.items()}
    files = sorted({r.file for results in by_seed.values() for r in results[methods[0]]}, key=lambda f: order.get(f, 0))
    per_file: dict[str, dict[str, float | None]] = {}
    for file in files:
        per_file[file] = {}
        for m in methods:
            values = [r.auroc for results in by_seed.values() for r in results[m] if r.file == file]
            known = [v for v in values if v is not None]
            per_file[file][m] = float(np.mean(known)) if known else None
    meta = {
        **runs[0]["meta"],
        "files": len(files),
        "seeds": sorted(int(seed) for seed in by_seed),
        "command": "; ".join(run["meta"]["command"] for run in runs)
        + "; python -m bench.sequences --combine "
        + " ".join(str(p) for p in paths),
    }
    for method, m in summary.items():
        print(f"{method:8s} F1 {m['f1']:.3f}±{m['f1_sd']:.3f} FAR {m['far']:.2f}±{m['far_sd']:.2f} "
              f"MAR {m['mar']:.2f} AUROC {m['auroc_pooled']:.3f} per-file {m['auroc_per_file_mean']:.3f}")  # fmt: skip
    if markdown_path:
        markdown_path.write_text(markdown(summary, per_file, meta))
    return 0


def main(argv: list[str] | None = None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.combine:
        return combine(args.combine, args.markdown)
    files = skab_files(args.data, args.files)
    variants = dict(item.split(":", 1) for item in args.variants)
    seeds = args.seeds if args.seeds else [args.seed]
    per_seed: dict[str, list[dict[str, float]]] = {}
    aurocs: dict[str, dict[str, list[float]]] = {}
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for seed in seeds:
        results, proto = run_seed(args, files, seed, variants)
        raw[str(seed)] = {method: [raw_result(r) for r in rs] for method, rs in results.items()}
        for method, rs in results.items():
            per_seed.setdefault(method, []).append(pooled_metrics(rs))
            for r in rs:
                if r.auroc is not None:
                    aurocs.setdefault(r.file, {}).setdefault(method, []).append(r.auroc)
    summary = {method: mean_over_seeds(ms) for method, ms in per_seed.items()}
    per_file = {
        f"{p.parent.name}/{p.stem}": {
            m: float(np.mean(v)) if (v := aurocs.get(f"{p.parent.name}/{p.stem}", {}).get(m)) else None for m in summary
        }
        for p in files
    }
    meta = {
        "files": len(files),
        "seeds": seeds,
        "variants": variants,
        "protocol": proto.__dict__,
        "command": "python -m bench.sequences " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    for method, m in summary.items():
        print(
            f"{method:8s} F1 {m['f1']:.3f}±{m['f1_sd']:.3f} FAR {m['far']:.2f}±{m['far_sd']:.2f} "
            f"MAR {m['mar']:.2f} AUROC {m['auroc_pooled']:.3f} per-file {m['auroc_per_file_mean']:.3f} "
            f"fit {m['fit_seconds_per_file']:.1f}s"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"meta": meta, "summary": summary, "per_seed": per_seed, "per_file": per_file, "rows": raw})
        )
    if args.markdown:
        args.markdown.write_text(markdown(summary, per_file, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
