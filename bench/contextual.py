"""Contextual anomalies: the CVAE given a context column against the unconditional VAE.

Three detectors, all `training.tabular.fit_detector` with the default `TrainConfig` (the code path
of `vae-anomaly train`), seeds 0, 1, 2:

- `vae`: the plain VAE on every column, the context as one more feature (what `vae-anomaly train`
  does without `--family`);
- `vae, no context`: the plain VAE on the features alone (the context column dropped);
- `cvae`: `--family cvae --condition-columns <context>`: x modelled given the context.

Two kinds of data:

1. `generator`: `training.contextual_data` (4 segments; each anomaly is a normal row of another
   segment presented with the wrong segment). 3000 normal training rows; test: 2000 normal rows and
   200 contextual anomalies, another seed.
2. a real ADBench set (`--dataset PATH --context x11,x12`): the protocol of
   ../shared/bench/PROTOCOL.md (60 % of the normal rows train, test = the other 40 % + all
   anomalies, the data set's own labels), and in the same run, on the same fitted models, *injected*
   contextual anomalies: each held-out normal row with its context replaced by another value seen in
   training (a normal row presented in the wrong context), against the held-out normal rows.

    python -m bench.contextual --dataset ../shared/datasets/adbench/12_fault.npz --context x11,x12 \
        --out bench/results/contextual.json --markdown bench/results/contextual.md

Context columns are named x0, x1, ... as `vae-anomaly train` names the columns of an .npz. Several
context columns that are one-hot blocks of one variable (fault's TypeOfSteel_A300 / _A400) are
flipped together: a replacement context is another *combination* seen in training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.detection import environment, load_dataset, protocol_split
from vae_anomaly.training.contextual_data import CONTEXT, LABEL, contextual_columns

SEEDS = (0, 1, 2)
DETECTORS = ("vae", "vae, no context", "cvae")
Columns = dict[str, np.ndarray]


def say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def fit_and_score(
    detector: str, train: Columns, tests: dict[str, Columns], context: list[str], seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Fit one detector on `train`; its scores on each test set, and the fit time."""
    from vae_anomaly.training.tabular import fit_detector
    from vae_anomaly.training.trainer import TrainConfig

    def view(columns: Columns) -> Columns:
        return {k: v for k, v in columns.items() if k not in context} if detector == "vae, no context" else columns

    options: dict[str, Any] = {"family": "cvae", "condition_columns": context} if detector == "cvae" else {}
    config = TrainConfig(**{**overrides, **options, "seed": seed})
    started = time.perf_counter()
    result = fit_detector(view(train), config, progress=False)
    fit_seconds = time.perf_counter() - started
    det = result.detector
    scores = {
        name: det.score(det.kind.columns_from_table(view(columns))).terms.score  # type: ignore[attr-defined]
        for name, columns in tests.items()
    }
    return {"scores": scores, "fit_seconds": fit_seconds, "epochs": result.summary["epochs"]}


def generator_task(seed: int) -> tuple[Columns, dict[str, tuple[Columns, np.ndarray]], list[str]]:
    train = contextual_columns(3000, 0, seed=100 + seed)
    train.pop(LABEL)
    test = contextual_columns(2000, 200, seed=200 + seed)
    labels = test.pop(LABEL)
    return train, {"contextual (generated)": (test, labels)}, [CONTEXT]


def injected_context(x: np.ndarray, train_contexts: np.ndarray, context: list[int], seed: int) -> np.ndarray:
    """Each row of `x` with its context columns replaced by another combination seen in training."""
    rng = np.random.default_rng(seed)
    combos = np.unique(train_contexts, axis=0)
    if len(combos) < 2:
        raise ValueError("the context takes one value on the training rows: nothing to swap")
    out = x.copy()
    for i in range(len(x)):
        others = combos[~np.all(combos == x[i, context], axis=1)]
        out[i, context] = others[rng.integers(len(others))]
    return out


def dataset_task(
    path: Path, context_names: list[str], seed: int
) -> tuple[Columns, dict[str, tuple[Columns, np.ndarray]], list[str]]:
    x, y = load_dataset(path)
    context = [int(name.removeprefix("x")) for name in context_names]
    split = protocol_split(x, y, seed)

    def columns(rows: np.ndarray) -> Columns:
        return {f"x{j}": rows[:, j].astype(np.float64) for j in range(rows.shape[1])}

    normal_test = split.x_test[split.y_test == 0]
    swapped = injected_context(normal_test, split.x_train[:, context], context, seed)
    injected = np.concatenate([normal_test, swapped])
    injected_labels = np.r_[np.zeros(len(normal_test), dtype=np.int64), np.ones(len(swapped), dtype=np.int64)]
    tests = {
        "ADBench labels": (columns(split.x_test), split.y_test),
        "injected contexts": (columns(injected), injected_labels),
    }
    return columns(split.x_train), tests, context_names


def run(
    tasks: dict[str, Callable[[int], tuple[Columns, dict[str, tuple[Columns, np.ndarray]], list[str]]]],
    overrides: dict[str, Any],
) -> list[dict[str, Any]]:
    records = []
    for data_name, task in tasks.items():
        for seed in SEEDS:
            train, tests, context = task(seed)
            test_columns = {name: columns for name, (columns, _) in tests.items()}
            for detector in DETECTORS:
                outcome = fit_and_score(detector, train, test_columns, context, seed, overrides)
                for test_name, (_, labels) in tests.items():
                    scores = outcome["scores"][test_name]
                    record = {
                        "data": data_name,
                        "test": test_name,
                        "detector": detector,
                        "seed": seed,
                        "auroc": float(roc_auc_score(labels, scores)),
                        "auprc": float(average_precision_score(labels, scores)),
                        "fit_seconds": outcome["fit_seconds"],
                        "epochs": outcome["epochs"],
                    }
                    records.append(record)
                    say(
                        f"{data_name:>10} | {test_name:<22} | {detector:<15} | seed {seed} | "
                        f"AUROC {record['auroc']:.3f} AUPRC {record['auprc']:.3f} | fit {outcome['fit_seconds']:.1f} s"
                    )
    return records


def table(records: list[dict[str, Any]]) -> str:
    """Mean ± std over seeds of AUROC, mean AUPRC and fit time, one row per data/test and detector."""
    lines = [
        "| data | anomalies | detector | AUROC (mean ± std, 3 seeds) | AUPRC | fit s |",
        "|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["data"], r["test"], r["detector"]) for r in records))
    for data, test, detector in keys:
        rows = [r for r in records if (r["data"], r["test"], r["detector"]) == (data, test, detector)]
        auroc = np.array([r["auroc"] for r in rows])
        lines.append(
            f"| {data} | {test} | {detector} | {auroc.mean():.3f} ± {auroc.std():.3f} | "
            f"{np.mean([r['auprc'] for r in rows]):.3f} | {np.mean([r['fit_seconds'] for r in rows]):.1f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.contextual", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, help="an ADBench .npz (X, y) with a context column")
    parser.add_argument("--context", default="", help="its context columns, e.g. x11,x12")
    parser.add_argument("--no-generator", action="store_true", help="skip the generated data")
    parser.add_argument("--vae-config", default="{}", metavar="JSON", help="JSON merged into every TrainConfig")
    parser.add_argument("--out", type=Path, help="JSON with every record and the environment")
    parser.add_argument("--markdown", type=Path, help="the table as markdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tasks: dict[str, Callable[[int], Any]] = {}
    if not args.no_generator:
        tasks["generator"] = generator_task
    if args.dataset is not None:
        context = [name.strip() for name in args.context.split(",") if name.strip()]
        if not context:
            raise SystemExit("error: --dataset needs --context (its context columns, e.g. x11,x12)")
        name = args.dataset.stem.split("_", 1)[-1]
        tasks[name] = lambda seed: dataset_task(args.dataset, context, seed)
    if not tasks:
        raise SystemExit("error: nothing to run (give --dataset or drop --no-generator)")
    overrides = json.loads(args.vae_config)
    started = time.perf_counter()
    records = run(tasks, overrides)
    text = table(records)
    print(text)
    meta = {"command": " ".join(["python -m bench.contextual", *(argv or sys.argv[1:])]), "overrides": overrides}
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "environment": environment(), "records": records}, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
