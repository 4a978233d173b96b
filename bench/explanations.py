"""Explanation benchmark: does `top_features` name the column that was made anomalous?

The injection protocol of issue 10, on the 18 ADBench sets (split as in ../shared/bench/PROTOCOL.md)
and on the bundled demo data:

1. Fit the default detector (`vae-anomaly train` with no flags: `training.tabular.fit_detector`
   with `TrainConfig(seed=s)`) on the protocol's train rows.
2. Take `--rows` held-out normal rows (the protocol's test normals; for the demo, normal rows of
   the held-out demo file, another generator seed). For each row and each column in turn, make one
   copy with that column pushed: a numeric column moves `k` training standard deviations away from
   the training mean (k = 6 and k = 40; integer columns rounded), a categorical column takes the
   rarest training category other than its own, a boolean is flipped. A constant column (no spread
   to push by) and a cell that is missing in the row are skipped.
3. Score every copy through the one scoring path and count how often the pushed column is
   `top_features[0]` (top-1) and among the first three (top-3).

Both explanation methods are measured on the same model and the same copies: `masked` (the default,
`model.kinds.tabular.explanations`) and `nll` (the per-feature terms of -log p(x | z = mu) that
`top_features` used before). A pushed boolean or a swapped category can leave a perfectly normal
record (the demo's `country` and `weekend` depend on nothing), so those are also reported over the
copies that exceed the `warn` threshold.

    python -m bench.explanations --out /tmp/explanations.json --cache /tmp/vae-cache
    python -m bench.explanations --datasets $(python -m bench.folds A) --no-demo
    python -m bench.explanations --report-only /tmp/explanations.json

`--cache DIR` keeps each fitted model as an artifact directory (`DIR/<data set>-seed<s>`) and loads
it on the next run: the calibration benchmark (`bench.calibration`) uses the same cache.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.detection import DEFAULT_DATA, dataset_name, environment, find_datasets, load_dataset, protocol_split, say
from bench.detection import write_json as write_results
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.tabular.kind import TabularKind

PUSHES = (6.0, 40.0)
METHODS = ("masked", "nll")
DEMO = "demo"


# -- fitted models -------------------------------------------------------------------------------


def array_columns(x: np.ndarray) -> dict[str, np.ndarray]:
    """Raw rows (n, d) → the columns `x0..x{d-1}` that `vae-anomaly train` reads from an .npz."""
    return {f"x{i}": x[:, i].astype(np.float64) for i in range(x.shape[1])}


def fit_or_load(cache: Path | None, key: str, columns: dict[str, np.ndarray], seed: int) -> Detector:
    """The default detector for `columns`, from `cache/key` when a previous run saved it there."""
    from vae_anomaly.training.tabular import fit_detector
    from vae_anomaly.training.trainer import TrainConfig

    directory = cache / key if cache else None
    if directory is not None and (directory / "manifest.json").exists():
        return Detector.load(directory, "cpu")
    started = time.perf_counter()
    detector = fit_detector(columns, TrainConfig(seed=seed), progress=False).detector
    say(f"  fitted {key} in {time.perf_counter() - started:.1f} s")
    if directory is not None:
        detector.save(directory)
    return detector


@dataclass
class Case:
    """One data set and seed: the fitted detector and held-out normal rows as checked columns."""

    name: str
    detector: Detector
    kind: TabularKind
    train: dict[str, np.ndarray]
    normal: dict[str, np.ndarray]


def adbench_case(path: Path, seed: int, cache: Path | None) -> Case:
    x, y = load_dataset(path)
    split = protocol_split(x, y, seed)
    name = dataset_name(path)
    train = array_columns(split.x_train)
    detector = fit_or_load(cache, f"{name}-seed{seed}", train, seed)
    kind = detector.kind
    assert isinstance(kind, TabularKind)
    normal = kind.columns_from_table(array_columns(split.x_test[split.y_test == 0]))
    return Case(name, detector, kind, kind.columns_from_table(train), normal)


def demo_case(seed: int, cache: Path | None) -> Case:
    """The demo data as `vae-anomaly demo` makes it: training file seed 0, held-out file seed 1."""
    from vae_anomaly.training.data import normal_mask, read_table
    from vae_anomaly.training.demo_data import LABEL, make_demo_frame

    with tempfile.TemporaryDirectory() as tmp:
        train_path, test_path = Path(tmp) / "demo.csv", Path(tmp) / "demo_test.csv"
        make_demo_frame(seed=0).to_csv(train_path, index=False)
        make_demo_frame(n_normal=3000, seed=1).to_csv(test_path, index=False)
        table = read_table(train_path, LABEL)
        assert table.labels is not None
        train = table.take(np.flatnonzero(normal_mask(table.labels, None)))
        detector = fit_or_load(cache, f"{DEMO}-seed{seed}", train, seed)
        kind = detector.kind
        assert isinstance(kind, TabularKind)
        test = read_table(test_path, LABEL, schema=kind.schema)
    assert test.labels is not None
    normal = kind.columns_from_table(test.take(np.flatnonzero(normal_mask(test.labels, None))))
    return Case(DEMO, detector, kind, kind.columns_from_table(train), normal)


# -- injection -----------------------------------------------------------------------------------


def pushed_column(case: Case, name: str, rows: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The column `name` of `rows` pushed (see the module docstring) and a mask of the rows where a
    push exists (cell observed, column not constant); None when the column cannot be pushed at all."""
    feature = case.kind.feature_by_name[name]
    train = case.train[name]
    values = case.normal[name][rows]
    if feature.type == "numeric":
        observed = train[~np.isnan(train)]
        sd = float(np.std(observed)) if observed.size else 0.0
        if sd <= 0:
            return None
        center = float(np.mean(observed))
        direction = np.where(values >= center, 1.0, -1.0)
        pushed = values + direction * k * sd
        if feature.integer:
            pushed = np.round(pushed)
        return pushed, ~np.isnan(values)
    if feature.type == "boolean":
        return 1.0 - values, ~np.isnan(values)
    seen = [v for v in train.tolist() if v is not None]
    categories, counts = np.unique(np.array(seen, dtype=object).astype(str), return_counts=True)
    order = [str(c) for c in categories[np.argsort(counts, kind="stable")]]
    if len(order) < 2:
        return None
    pushed = np.array([order[1] if v == order[0] else order[0] for v in values.tolist()], dtype=object)
    return pushed, np.array([v is not None for v in values.tolist()])


@dataclass
class Tally:
    """Counts for one (data set, push, method, column type)."""

    n: int = 0
    top1: int = 0
    top3: int = 0
    flagged: int = 0
    flagged_top1: int = 0

    def add(self, other: Tally) -> None:
        for field in ("n", "top1", "top3", "flagged", "flagged_top1"):
            setattr(self, field, getattr(self, field) + getattr(other, field))


def column_type(case: Case, name: str) -> str:
    feature = case.kind.feature_by_name[name]
    if feature.type == "numeric":
        return "integer" if feature.integer else "numeric"
    return feature.type


def evaluate_case(case: Case, n_rows: int, seed: int) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """{push: {method: {column type: counts}}} for one case."""
    rng = np.random.default_rng(seed)
    n_normal = len(next(iter(case.normal.values())))
    rows = np.sort(rng.choice(n_normal, size=min(n_rows, n_normal), replace=False))
    base = {name: values[rows] for name, values in case.normal.items()}
    warn = case.detector.thresholds.thresholds["warn"].value
    out: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    for k in PUSHES:
        tallies: dict[str, dict[str, Tally]] = {m: {} for m in METHODS}
        for name in case.kind.schema.names:
            pushed = pushed_column(case, name, rows, k)
            if pushed is None:
                continue
            values, valid = pushed
            if not valid.any():
                continue
            copies = {n: v[valid] for n, v in base.items()}
            copies[name] = values[valid]
            scored = case.detector.score(copies)
            flagged = scored.terms.score > warn
            for method in METHODS:
                batch = scored if method == "masked" else replace(scored, rescore=None)
                results = case.detector.results(batch, 3)
                firsts = [r["top_features"][0]["feature"] if r["top_features"] else None for r in results]  # type: ignore[index]
                top3 = [name in [t["feature"] for t in r["top_features"]] for r in results]  # type: ignore[union-attr]
                hit = np.array([f == name for f in firsts])
                tally = tallies[method].setdefault(column_type(case, name), Tally())
                tally.add(
                    Tally(
                        n=len(results),
                        top1=int(hit.sum()),
                        top3=int(np.sum(top3)),
                        flagged=int(flagged.sum()),
                        flagged_top1=int((hit & flagged).sum()),
                    )
                )
        out[f"{k:g}sd"] = {m: {t: vars(c) for t, c in by_type.items()} for m, by_type in tallies.items()}
    return out


def explain_demo_record(case: Case) -> list[dict[str, object]]:
    """`top_features` of the demo's own anomalous record (the README's second curl)."""
    from vae_anomaly.training.demo_data import demo_records

    _, anomalous = demo_records()
    columns = case.kind.columns_from_records([anomalous])
    return case.detector.score_results(columns, explain=3)[0]["top_features"]  # type: ignore[return-value]


# -- report --------------------------------------------------------------------------------------


def headline(
    results: dict[str, Any], datasets: Iterable[str], push: str, method: str, skip: tuple[str, ...] = ()
) -> dict[str, float]:
    """Pooled rates over the data sets named (every column type but `skip`), and their per-data-set mean."""
    total = Tally()
    per_set = []
    for name in datasets:
        entry = results["cases"].get(name)
        if entry is None:
            continue
        case_total = Tally()
        for column_kind, counts in entry["rates"][push][method].items():
            if column_kind not in skip:
                case_total.add(Tally(**counts))
        total.add(case_total)
        if case_total.n:
            per_set.append(case_total.top1 / case_total.n)

    def rate(hits: int, n: int) -> float:
        return hits / n if n else math.nan

    return {
        "top1": rate(total.top1, total.n),
        "top3": rate(total.top3, total.n),
        "mean_top1": float(np.mean(per_set)) if per_set else math.nan,
        "flagged_top1": rate(total.flagged_top1, total.flagged),
        "copies": total.n,
    }


def report(results: dict[str, Any]) -> None:
    names = list(results["cases"])
    adbench = [n for n in names if n != DEMO]
    say("\n| data | push | method | top-1 | top-3 | top-1 of flagged | copies |")
    say("|---|---|---|---|---|---|---|")
    demo = [DEMO] if DEMO in names else []
    groups: list[tuple[str, list[str], tuple[str, ...]]] = [
        (f"{len(adbench)} ADBench sets (pooled)", adbench, ()),
        ("demo", demo, ()),
        ("demo without boolean flips", demo, ("boolean",)),
    ]
    for group, members, skip in groups:
        if not members:
            continue
        for push in (f"{k:g}sd" for k in PUSHES):
            for method in METHODS:
                h = headline(results, members, push, method, skip)
                say(
                    f"| {group} | {push} | {method} | {h['top1']:.3f} | {h['top3']:.3f} | "
                    f"{h['flagged_top1']:.3f} | {h['copies']} |"
                )
    say("\nper data set, top-1 (6 sd / 40 sd):")
    say("| data | masked | nll |")
    say("|---|---|---|")
    for name in names:
        cells = []
        for method in METHODS:
            pair = [headline(results, [name], f"{k:g}sd", method)["top1"] for k in PUSHES]
            cells.append(" / ".join(f"{v:.3f}" for v in pair))
        say(f"| {name} | {' | '.join(cells)} |")
    if DEMO in names:
        say("\ndemo, by column type (masked, 6 sd / 40 sd):")
        for push in (f"{k:g}sd" for k in PUSHES):
            by_type = results["cases"][DEMO]["rates"][push]["masked"]
            text = ", ".join(
                f"{t} {c['top1']}/{c['n']} (flagged {c['flagged_top1']}/{c['flagged']})" for t, c in by_type.items()
            )
            say(f"  {push}: {text}")
        say(f"demo's anomalous record: {json.dumps(results['cases'][DEMO]['anomalous_record'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of ADBench .npz files")
    parser.add_argument("--datasets", nargs="*", help="data set names (default: all in --data)")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=50, help="held-out normal rows per data set")
    parser.add_argument("--cache", type=Path, help="folder of fitted models to reuse")
    parser.add_argument("--out", type=Path, default=Path("explanations.json"))
    parser.add_argument("--report-only", type=Path, help="print the tables of a results file")
    args = parser.parse_args(argv)
    if args.report_only:
        report(json.loads(args.report_only.read_text()))
        return 0
    results: dict[str, Any] = {"environment": environment(), "seed": args.seed, "rows": args.rows, "cases": {}}
    cases: list[tuple[str, Any]] = [] if args.no_demo else [(DEMO, None)]
    cases += [(dataset_name(p), p) for p in find_datasets(args.data, args.datasets)]
    for name, path in cases:
        say(f"{name} ...")
        started = time.perf_counter()
        case = demo_case(args.seed, args.cache) if path is None else adbench_case(path, args.seed, args.cache)
        entry: dict[str, Any] = {"rates": evaluate_case(case, args.rows, args.seed)}
        if name == DEMO:
            entry["anomalous_record"] = explain_demo_record(case)
        entry["seconds"] = time.perf_counter() - started
        results["cases"][name] = entry
        write_results(args.out, results)
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
