"""Tabular detection benchmark: the project's detector beside PyOD's reference detectors.

Implements the tabular part of ../shared/bench/PROTOCOL.md on the ADBench data sets:

1. more than 50,000 rows → stratified random subsample of 50,000 rows (seed s);
2. the normal rows are split at random (seed s) 60% train / 40% test; test = those 40% + all anomalies;
3. the project's detector gets the raw train rows (it does its own preprocessing); the reference
   detectors get the columns that are constant on train dropped and a StandardScaler fit on train;
4. fit on train, score the test rows (higher = more anomalous), AUROC and AUPRC.

Every method of a run sees exactly the same split of a (data set, seed). The project's detector runs
through `training.tabular.fit_detector` with `TrainConfig(seed=s)`, the code path of
`vae-anomaly train` with no flags; `--vae-config '{"score_method": "iwae"}'` merges JSON into the
TrainConfig for ablations and `--label` names the variant.

    python -m bench.detection --quick                       # 6 small data sets, seed 0
    python -m bench.detection --out /tmp/full.json          # 18 data sets, seeds 0 1 2, default methods
    python -m bench.detection --methods vae --label iwae64 --vae-config '{"score_method": "iwae", "score_samples": 64}'
    python -m bench.detection --report-only /tmp/full.json  # tables from a (partial) results file

Results are written to the JSON file after every (data set, seed, method), so a run that is stopped
keeps what it finished; `--resume` skips what the --out file already holds.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("../shared/datasets/adbench")  # relative to the project root, see the README there
MAX_ROWS = 50_000
TRAIN_SHARE = 0.6
DEFAULT_SEEDS = [0, 1, 2]
QUICK_DATASETS = ["cardio", "Pima", "thyroid", "vowels", "WDBC", "yeast"]
DEFAULT_METHODS = ["vae", "iforest", "knn", "ecod", "autoencoder", "pyod_vae"]
OPTIONAL_METHODS = ["pca", "ocsvm"]
PROJECT_METHOD = "vae"
PROJECT_LABEL = "vae-anomaly"

# Reference detectors: PyOD class (module, name), defaults except random_state=s where accepted.
# verbose=0 only silences the deep models' per-epoch progress bars; it changes no computation.
PYOD_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "iforest": ("pyod.models.iforest", "IForest", {}),
    "knn": ("pyod.models.knn", "KNN", {}),
    "ecod": ("pyod.models.ecod", "ECOD", {}),
    "autoencoder": ("pyod.models.auto_encoder", "AutoEncoder", {"verbose": 0}),
    "pyod_vae": ("pyod.models.vae", "VAE", {"verbose": 0}),
    "pca": ("pyod.models.pca", "PCA", {}),
    "ocsvm": ("pyod.models.ocsvm", "OCSVM", {}),
}
METHOD_LABELS = {
    "iforest": "IForest",
    "knn": "KNN",
    "ecod": "ECOD",
    "autoencoder": "AutoEncoder",
    "pyod_vae": "PyOD VAE",
    "pca": "PCA",
    "ocsvm": "OCSVM",
}


def say(text: str = "") -> None:
    print(text, flush=True)


# -- data and protocol -------------------------------------------------------------------------


def dataset_name(path: Path) -> str:
    """'6_cardio.npz' → 'cardio' (ADBench's number prefix dropped)."""
    prefix, sep, rest = path.stem.partition("_")
    return rest if sep and prefix.isdigit() else path.stem


def find_datasets(data_dir: Path, wanted: list[str] | None) -> list[Path]:
    """The .npz files in data_dir, smallest (rows × features) first so that a run stopped early holds
    the most complete data sets; or those named in `wanted` (case-insensitive, with or without the
    number prefix) in the order given."""
    files = sorted(data_dir.glob("*.npz"), key=lambda p: (dataset_size(p), dataset_name(p).lower()))
    if not files:
        raise SystemExit(f"error: no .npz files in {data_dir}")
    if not wanted:
        return files
    by_key: dict[str, Path] = {}
    for path in files:
        by_key[dataset_name(path).lower()] = path
        by_key[path.stem.lower()] = path
    chosen, unknown = [], []
    for name in wanted:
        path = by_key.get(name.lower().removesuffix(".npz"))
        (chosen if path else unknown).append(path or name)
    if unknown:
        known = ", ".join(dataset_name(p) for p in files)
        raise SystemExit(f"error: unknown data set(s) {', '.join(unknown)}; known: {known}")
    return list(dict.fromkeys(chosen))


def dataset_size(path: Path) -> int:
    with np.load(path, allow_pickle=False) as data:
        return int(np.prod(data["X"].shape))


def load_dataset(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        x = np.asarray(data["X"])
        y = np.asarray(data["y"]).astype(np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"{path}: X {x.shape} and y {y.shape} do not fit")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{path}: y must be 0 (normal) or 1 (anomaly)")
    return x, y


@dataclass
class Split:
    x_train: np.ndarray  # raw normal rows, float64
    x_test: np.ndarray  # raw rows, float64
    y_test: np.ndarray  # 0 = normal, 1 = anomaly
    n_rows: int  # rows after the optional subsample


def protocol_split(x: np.ndarray, y: np.ndarray, seed: int) -> Split:
    """Steps 1 and 2 of the protocol for one seed."""
    index = np.arange(len(y))
    if len(y) > MAX_ROWS:
        index, _ = train_test_split(index, train_size=MAX_ROWS, stratify=y, random_state=seed)
        index = np.sort(index)
    y_sub = y[index]
    normal = index[y_sub == 0]
    anomalous = index[y_sub == 1]
    train, test_normal = train_test_split(normal, train_size=TRAIN_SHARE, random_state=seed)
    test = np.concatenate([np.sort(test_normal), anomalous])
    x = x.astype(np.float64)
    return Split(x_train=x[np.sort(train)], x_test=x[test], y_test=y[test], n_rows=len(index))


def reference_preprocess(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Step 3 for the reference detectors: drop columns constant on train, standardise on train."""
    keep = np.ptp(x_train, axis=0) > 0
    if not keep.any():
        raise ValueError("every column is constant on the train rows")
    scaler = StandardScaler().fit(x_train[:, keep])
    return scaler.transform(x_train[:, keep]), scaler.transform(x_test[:, keep]), int(keep.sum())


# -- methods -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    scores: np.ndarray
    fit_seconds: float
    score_seconds: float
    info: dict[str, Any]


def run_project_detector(split: Split, seed: int, overrides: dict[str, Any]) -> Outcome:
    """Exactly what `vae-anomaly train` (no flags) + `score` do, with the protocol's seed."""
    from vae_anomaly.training.tabular import fit_detector
    from vae_anomaly.training.trainer import TrainConfig

    config = TrainConfig(**{**overrides, "seed": seed})
    train_cols = {f"x{i}": split.x_train[:, i].astype(np.float64) for i in range(split.x_train.shape[1])}
    test_cols = {f"x{i}": split.x_test[:, i].astype(np.float64) for i in range(split.x_test.shape[1])}
    started = time.perf_counter()
    result = fit_detector(train_cols, config, progress=False)
    fit_seconds = time.perf_counter() - started
    det = result.detector
    started = time.perf_counter()
    scores = det.score(det.kind.columns_from_table(test_cols)).terms.score
    score_seconds = time.perf_counter() - started
    summary = result.summary
    info = {
        "epochs": summary.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
        "batch_size": summary.get("batch_size"),
        "latent_dim": det.manifest.family_config.latent_dim,
        "hidden_dims": list(det.manifest.kind_config.network.hidden_dims),
        "validation_elbo": summary.get("validation_elbo"),
    }
    return Outcome(np.asarray(scores, dtype=np.float64), fit_seconds, score_seconds, info)


def make_pyod(method: str, seed: int):
    module_name, class_name, extra = PYOD_MODELS[method]
    module = __import__(module_name, fromlist=[class_name])
    cls = getattr(module, class_name)
    kwargs = dict(extra)
    if "random_state" in inspect.signature(cls.__init__).parameters:
        kwargs["random_state"] = seed
    return cls(**kwargs), kwargs


def fit_and_score_pyod(method: str, x_train: np.ndarray, x_test: np.ndarray, seed: int, info: dict) -> Outcome:
    """Fit a PyOD reference detector with its defaults and score the test rows, timing both."""
    model, kwargs = make_pyod(method, seed)
    started = time.perf_counter()
    model.fit(x_train)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = model.decision_function(x_test)
    score_seconds = time.perf_counter() - started
    return Outcome(np.asarray(scores, dtype=np.float64).ravel(), fit_seconds, score_seconds, {**info, "kwargs": kwargs})


def run_pyod(method: str, split: Split, seed: int) -> Outcome:
    x_train, x_test, n_used = reference_preprocess(split.x_train, split.x_test)
    return fit_and_score_pyod(method, x_train, x_test, seed, {"features_used": n_used})


def method_runner(method: str, overrides: dict[str, Any]) -> Callable[[Split, int], Outcome]:
    if method == PROJECT_METHOD:
        return lambda split, seed: run_project_detector(split, seed, overrides)
    return lambda split, seed: run_pyod(method, split, seed)


def metrics(y: np.ndarray, scores: np.ndarray) -> tuple[float, float, dict[str, int]]:
    """AUROC and AUPRC. ±inf scores keep their rank (placed just beyond the finite extremes);
    a NaN score is an error: there is no honest place to rank it."""
    if scores.shape != y.shape:
        raise ValueError(f"{scores.shape[0] if scores.ndim else 0} scores for {y.shape[0]} test rows")
    nan = int(np.isnan(scores).sum())
    if nan:
        raise ValueError(f"{nan} of {scores.size} scores are NaN")
    inf = np.isinf(scores)
    notes = {}
    if inf.any():
        finite = scores[~inf]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        scores = np.where(scores == np.inf, high + 1.0, np.where(scores == -np.inf, low - 1.0, scores))
        notes["infinite_scores"] = int(inf.sum())
    return float(roc_auc_score(y, scores)), float(average_precision_score(y, scores)), notes


# -- results -----------------------------------------------------------------------------------


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    import sklearn
    import torch

    return {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "pyod": package_version("pyod"),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "vae_anomaly": package_version("vae-anomaly"),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(path)


def per_dataset_seed_main(
    argv: list[str] | None,
    *,
    description: str | None,
    default_out: str,
    evaluate: Callable[[Path, int, Path | None], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """The command of the benchmarks that fit the project's detector once per (data set, seed) and
    keep one record each (bench.calibration, bench.neighbours): the same options, the results file
    rewritten after every record (a cut run keeps what finished), `--report-only` for a saved file."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of ADBench .npz files")
    parser.add_argument("--datasets", nargs="*", help="data set names (default: all in --data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    parser.add_argument("--cache", type=Path, help="folder of fitted models to reuse")
    parser.add_argument("--out", type=Path, default=Path(default_out))
    parser.add_argument("--report-only", type=Path, help="print the tables of a results file")
    args = parser.parse_args(argv)
    if args.report_only:
        report(json.loads(args.report_only.read_text()))
        return 0
    results: dict[str, Any] = {"environment": environment(), "records": []}
    for path in find_datasets(args.data, args.datasets):
        for seed in args.seeds:
            record = evaluate(path, seed, args.cache)
            say(describe(record))
            results["records"].append(record)
            write_json(args.out, results)
    report(results)
    return 0


def label_of(record: dict[str, Any]) -> str:
    return record.get("label") or METHOD_LABELS.get(record["method"], record["method"])


@dataclass
class Cell:
    """One (data set, method): the seeds' results."""

    auroc: list[float]
    auprc: list[float]
    fit: list[float]
    score: list[float]
    failed: int

    @staticmethod
    def _mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    @property
    def auroc_mean(self) -> float:
        return self._mean(self.auroc)

    @property
    def auroc_std(self) -> float:
        # Sample standard deviation over seeds (ddof=1); undefined for one seed.
        return float(np.std(self.auroc, ddof=1)) if len(self.auroc) > 1 else math.nan

    @property
    def auprc_mean(self) -> float:
        return self._mean(self.auprc)

    @property
    def fit_mean(self) -> float:
        return self._mean(self.fit)

    @property
    def score_mean(self) -> float:
        return self._mean(self.score)


@dataclass
class Table:
    datasets: list[str]
    methods: list[str]
    cells: dict[tuple[str, str], Cell]
    ranks: dict[tuple[str, str], float]
    seeds: list[int]

    def summary(self, method: str) -> dict[str, float]:
        cells = [self.cells[d, method] for d in self.datasets if (d, method) in self.cells]
        done = [c for c in cells if c.auroc]
        ranks = [self.ranks[d, method] for d in self.datasets if (d, method) in self.ranks]

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else math.nan

        return {
            "auroc": mean([c.auroc_mean for c in done]),
            "auprc": mean([c.auprc_mean for c in done]),
            "rank": mean(ranks),
            "fit": mean([c.fit_mean for c in done]),
            "score": mean([c.score_mean for c in done]),
            "datasets": len(done),
            "failed": sum(c.failed for c in cells),
        }


def complete_records(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep the data sets that have a result (or a recorded failure) for every (seed, method) seen
    in the records: a run still going or stopped early must not compare methods on different seeds."""
    seeds = {r["seed"] for r in records}
    methods = {label_of(r) for r in records}
    have: dict[str, set[tuple[int, str]]] = {}
    for r in records:
        have.setdefault(r["dataset"], set()).add((r["seed"], label_of(r)))
    wanted = {(s, m) for s in seeds for m in methods}
    partial = sorted(d for d, pairs in have.items() if pairs != wanted)
    return [r for r in records if r["dataset"] not in partial], partial


def build_table(records: list[dict[str, Any]]) -> Table:
    """Aggregate per (data set, method) over seeds; rank methods per data set by mean AUROC
    (1 = best, ties averaged; a method with no successful seed on a data set ranks last there)."""
    datasets = sorted(dict.fromkeys(r["dataset"] for r in records), key=str.lower)
    methods = list(dict.fromkeys(label_of(r) for r in records))
    seeds = sorted({int(r["seed"]) for r in records})
    cells: dict[tuple[str, str], Cell] = {}
    for r in records:
        cell = cells.setdefault((r["dataset"], label_of(r)), Cell([], [], [], [], 0))
        if r.get("error") or r.get("auroc") is None or not math.isfinite(r["auroc"]):
            cell.failed += 1
            continue
        cell.auroc.append(r["auroc"])
        cell.auprc.append(r["auprc"])
        cell.fit.append(r["fit_seconds"])
        cell.score.append(r["score_seconds"])
    ranks: dict[tuple[str, str], float] = {}
    for d in datasets:
        present = [m for m in methods if (d, m) in cells]
        values = [cells[d, m].auroc_mean for m in present]
        keyed = [-v if math.isfinite(v) else math.inf for v in values]
        for m, rank in zip(present, rankdata(keyed, method="average"), strict=True):
            ranks[d, m] = float(rank)
    return Table(datasets, methods, cells, ranks, seeds)


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "—"


def fmt_seconds(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def auroc_text(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    if not cell.auroc:
        return "failed"
    text = fmt(cell.auroc_mean)
    if math.isfinite(cell.auroc_std):
        text += f" ± {cell.auroc_std:.3f}"
    if cell.failed:
        text += f" ({cell.failed} failed)"
    return text


def print_report(table: Table) -> None:
    width = max(len(m) for m in table.methods) + 2
    for d in table.datasets:
        say(f"\n{d}")
        say(f"  {'method':<{width}}{'AUROC':<24}{'AUPRC':>7}{'fit s':>9}{'score s':>9}{'rank':>6}")
        for m in table.methods:
            cell = table.cells.get((d, m))
            if cell is None:
                continue
            say(
                f"  {m:<{width}}{auroc_text(cell):<24}{fmt(cell.auprc_mean):>7}"
                f"{fmt_seconds(cell.fit_mean):>9}{fmt_seconds(cell.score_mean):>9}{table.ranks[d, m]:>6.1f}"
            )
    say(f"\nSummary over {len(table.datasets)} data set(s), seeds {table.seeds}")
    say(f"  {'method':<{width}}{'AUROC':>7}{'AUPRC':>7}{'rank':>6}{'fit s':>9}{'score s':>9}  data sets  failed runs")
    for m in table.methods:
        s = table.summary(m)
        say(
            f"  {m:<{width}}{fmt(s['auroc']):>7}{fmt(s['auprc']):>7}{fmt(s['rank'], 2):>6}"
            f"{fmt_seconds(s['fit']):>9}{fmt_seconds(s['score']):>9}  {s['datasets']:>9}  {s['failed']:>11}"
        )


def markdown(table: Table, meta: dict[str, Any]) -> str:
    """Tables ready to paste into docs/BENCHMARKS.md."""
    env = meta.get("environment", {})
    methods = table.methods
    lines = [
        f"<!-- generated by {meta.get('script', 'bench/detection.py')} at "
        f"{meta.get('finished_at') or meta.get('started_at')} -->",
        f"Command: `{meta.get('command', '?')}`  ",
        f"Environment: {env.get('machine')}, {env.get('cpu_count')} CPU(s), torch {env.get('torch')} "
        f"({env.get('torch_threads')} threads{', CUDA' if env.get('cuda') else ', CPU only'}), "
        f"PyOD {env.get('pyod')}, scikit-learn {env.get('sklearn')}, numpy {env.get('numpy')}.  ",
        f"Seeds {table.seeds}; {len(table.datasets)} data sets.",
    ]
    if meta.get("vae_config"):
        lines.append(f"Project detector TrainConfig overrides: `{json.dumps(meta['vae_config'])}`.")
    if meta.get("left_out_partial"):
        lines.append(f"PARTIAL: left out, not finished for every seed × method: {', '.join(meta['left_out_partial'])}.")
    header = f"| {meta.get('dataset_title', 'data set')} | " + " | ".join(methods) + " |"
    rule = "|---|" + "---|" * len(methods)

    def per_dataset(title: str, value: Callable[[Cell], float], text: Callable[[Cell], str], best: str | None):
        lines.extend(["", title, "", header, rule])
        for d in table.datasets:
            cells = [table.cells.get((d, m)) for m in methods]
            values = [value(c) if c is not None and c.auroc else math.nan for c in cells]
            finite = [v for v in values if math.isfinite(v)]
            top = (max(finite) if best == "max" else min(finite)) if finite and best else None
            row = []
            for c, v in zip(cells, values, strict=True):
                cell_text = "—" if c is None else text(c)
                row.append(f"**{cell_text}**" if top is not None and v == top else cell_text)
            lines.append(f"| {d} | " + " | ".join(row) + " |")

    per_dataset("AUROC, mean ± standard deviation over seeds (best in bold):", Cell.auroc_mean.fget, auroc_text, "max")
    per_dataset(
        "AUPRC, mean over seeds (best in bold):",
        Cell.auprc_mean.fget,
        lambda c: fmt(c.auprc_mean) if c.auroc else "failed",
        "max",
    )
    per_dataset(
        "Fit seconds, mean over seeds:", Cell.fit_mean.fget, lambda c: fmt_seconds(c.fit_mean) if c.auroc else "—", None
    )
    lines.extend(
        [
            "",
            "Summary (means over data sets; rank = average per-data-set rank by mean AUROC, 1 = best):",
            "",
            "| method | mean AUROC | mean AUPRC | average rank | mean fit s | mean score s | data sets | failed runs |",
            "|---|---|---|---|---|---|---|---|",
        ]
    )
    for m in methods:
        s = table.summary(m)
        lines.append(
            f"| {m} | {fmt(s['auroc'])} | {fmt(s['auprc'])} | {fmt(s['rank'], 2)} | {fmt_seconds(s['fit'])} "
            f"| {fmt_seconds(s['score'])} | {s['datasets']} | {s['failed']} |"
        )
    return "\n".join(lines) + "\n"


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.detection",
        description="Tabular detection benchmark (../shared/bench/PROTOCOL.md): the project's VAE and PyOD references.",
    )
    parser.add_argument("--data", type=Path, default=None, help=f"ADBench .npz folder (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_DATASETS)}, seed 0")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (0 with --quick)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="data set names, e.g. cardio 6_cardio")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=[PROJECT_METHOD, *PYOD_MODELS],
        help=f"default: {' '.join(DEFAULT_METHODS)} (also: {' '.join(OPTIONAL_METHODS)})",
    )
    parser.add_argument(
        "--vae-config", default="{}", metavar="JSON", help="JSON merged into the project's TrainConfig kwargs"
    )
    parser.add_argument(
        "--label", help=f"name of the project's detector variant in the output (default {PROJECT_LABEL})"
    )
    parser.add_argument("--out", type=Path, help="results JSON (default /tmp/bench-detection-<timestamp>.json)")
    parser.add_argument("--resume", action="store_true", help="keep the results already in --out and skip them")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the Markdown tables to FILE")
    parser.add_argument(
        "--report-only", type=Path, nargs="+", metavar="JSON", help="print the tables of results files; run nothing"
    )
    parser.add_argument(
        "--complete-only",
        action="store_true",
        help="with --report-only: leave out data sets that lack some seed × method (a run still going)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the project's training warnings")
    return parser


def parse_overrides(text: str) -> dict[str, Any]:
    from pydantic import ValidationError

    from vae_anomaly.training.trainer import TrainConfig

    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --vae-config is not valid JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise SystemExit("error: --vae-config must be a JSON object")
    if "seed" in overrides:
        raise SystemExit("error: --vae-config cannot set seed: the protocol's seeds are --seeds")
    try:
        TrainConfig(**overrides)
    except ValidationError as exc:
        raise SystemExit(f"error: --vae-config does not fit TrainConfig: {exc}") from exc
    return overrides


def report_only(paths: list[Path], markdown_path: Path | None, complete_only: bool) -> int:
    records: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for path in paths:
        payload = json.loads(path.read_text())
        meta = meta or payload.get("meta", {})
        records.extend(payload.get("results", []))
    if not records:
        raise SystemExit("error: no results in the given file(s)")
    if complete_only:
        records, partial = complete_records(records)
        if partial:
            say(f"left out (not every seed × method finished): {', '.join(partial)}")
            meta = {**meta, "left_out_partial": partial}
        if not records:
            raise SystemExit("error: no data set has every seed × method")
    publish(records, meta, markdown_path)
    return 0


def publish(records: list[dict[str, Any]], meta: dict[str, Any], markdown_path: Path | None) -> None:
    """Print the per-data-set and summary tables, then the Markdown (also written to `markdown_path`)."""
    table = build_table(records)
    print_report(table)
    text = markdown(table, meta)
    say("\n" + text)
    if markdown_path:
        markdown_path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only:
        return report_only(args.report_only, args.markdown, args.complete_only)
    if not args.verbose:
        # Small data sets give calibration sets too small for the 0.1% threshold; training says so
        # once per fit. Thresholds do not enter AUROC/AUPRC, so the warning is noise here.
        logging.getLogger("vae_anomaly.training.trainer").setLevel(logging.ERROR)
    overrides = parse_overrides(args.vae_config)
    data_dir = args.data or (PROJECT_ROOT / DEFAULT_DATA)
    files = find_datasets(data_dir, args.datasets or (QUICK_DATASETS if args.quick else None))
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else DEFAULT_SEEDS)
    methods = list(dict.fromkeys(args.methods))
    started_at = datetime.now(timezone.utc)
    out = args.out or Path(f"/tmp/bench-detection-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json")
    project_label = args.label or PROJECT_LABEL

    records = previous_results(out) if args.resume else []
    env = environment()
    meta = {
        "protocol": "../shared/bench/PROTOCOL.md (tabular)",
        "command": "python -m bench.detection " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": None,
        "environment": env,
        "data_dir": str(data_dir),
        "datasets": [dataset_name(p) for p in files],
        "seeds": seeds,
        "methods": methods,
        "vae_config": overrides,
        "label": project_label,
    }
    say(
        f"torch {env['torch']} with {env['torch_threads']} threads, PyOD {env['pyod']}, sklearn {env['sklearn']}; "
        f"{len(files)} data sets × seeds {seeds} × methods {methods} → {out}"
    )
    if overrides:
        say(f"project detector '{project_label}': TrainConfig overrides {overrides}")
    runners = {m: method_runner(m, overrides) for m in methods}

    def tasks() -> Iterator[tuple[str, int, Split, dict[str, Any]]]:
        for path in files:
            name = dataset_name(path)
            x, y = load_dataset(path)
            for seed in seeds:
                split = protocol_split(x, y, seed)
                yield name, seed, split, {"n_rows": split.n_rows, "n_features": int(x.shape[1])}

    return run_tasks(tasks(), methods, runners, project_label, out, meta, records, args.markdown)


def previous_results(out: Path) -> list[dict[str, Any]]:
    """With --resume: the successful results the --out file already holds (failures run again)."""
    if not out.is_file():
        return []
    records = [r for r in json.loads(out.read_text()).get("results", []) if not r.get("error")]
    say(f"resuming: {len(records)} successful results kept from {out}")
    return records


def run_tasks(
    tasks: Iterable[tuple[str, int, Split, dict[str, Any]]],
    methods: list[str],
    runners: dict[str, Callable[[Split, int], Outcome]],
    project_label: str,
    out: Path,
    meta: dict[str, Any],
    records: list[dict[str, Any]],
    markdown_path: Path | None,
) -> int:
    """Run every method on every (data set, seed, split), saving results after each; then print the
    tables. Shared by the tabular and the image benchmark, so both report alike."""
    done = {(r["dataset"], r["seed"], r["method"], r.get("label")) for r in records}
    run_started = time.perf_counter()
    try:
        for name, seed, split, extra in tasks:
            base = {
                "dataset": name,
                "seed": seed,
                **extra,
                "n_train": len(split.x_train),
                "n_test": len(split.y_test),
                "n_test_anomalies": int(split.y_test.sum()),
            }
            for method in methods:
                label = project_label if method == PROJECT_METHOD else None
                if (name, seed, method, label) in done:
                    continue
                record = {**base, "method": method, "label": label}
                try:
                    outcome = runners[method](split, seed)
                    auroc, auprc, notes = metrics(split.y_test, outcome.scores)
                    record.update(
                        auroc=auroc,
                        auprc=auprc,
                        fit_seconds=outcome.fit_seconds,
                        score_seconds=outcome.score_seconds,
                        info={**outcome.info, **notes},
                        error=None,
                    )
                    status = f"AUROC {auroc:.4f}  AUPRC {auprc:.4f}  fit {outcome.fit_seconds:.2f} s"
                    status += f"  score {outcome.score_seconds:.2f} s"
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}"
                    record.update(
                        auroc=math.nan,
                        auprc=math.nan,
                        fit_seconds=math.nan,
                        score_seconds=math.nan,
                        error=message,
                        traceback=traceback.format_exc(limit=8),
                    )
                    status = f"FAILED {message[:300]}"
                records.append(record)
                write_json(out, {"meta": meta, "results": records})
                elapsed = time.perf_counter() - run_started
                say(f"[{elapsed:7.0f} s] {name:<18} seed {seed}  {label_of(record):<14} {status}")
    except KeyboardInterrupt:
        say("\ninterrupted: reporting what finished")
    meta["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["wall_seconds"] = round(time.perf_counter() - run_started, 1)
    write_json(out, {"meta": meta, "results": records})
    if not records:
        say("no results")
        return 1
    publish(records, meta, markdown_path)
    say(f"results: {out}; wall time {meta['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
