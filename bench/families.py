"""Every family on the same protocol: the 18 ADBench tabular sets and one-class MNIST.

The tabular part follows ../shared/bench/PROTOCOL.md exactly as `bench.detection` does (same split
function, same metrics), the image part as `bench.images` does; each family runs with its defaults
through `training.tabular.fit_detector` / `training.image_trainer.fit_image_detector` with
`TrainConfig(family=NAME, seed=s)`, i.e. `vae-anomaly train --family NAME` with no other flag. The
backbone, likelihood and training budget are the same for every family, so the table isolates what
the objective changes.

Tabular tasks run data set by data set, smallest first, every seed of a set before the next set
(`--order dataset`, the default: a run stopped early holds complete 3-seed comparisons on the sets it
reached) or seed by seed (`--order seed`); inside a (data set, seed) the families are interleaved, so
a run stopped early holds complete comparisons. Results are written to the JSON file after every fit,
and `--resume` skips the (family, data set, seed) results it already holds.

    python -m bench.families tabular --out /tmp/families-tabular.json
    python -m bench.families mnist --out /tmp/families-mnist.json --seeds 0
    python -m bench.families report /tmp/families-tabular.json /tmp/families-mnist.json --markdown /tmp/f.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from bench.detection import (
    DEFAULT_DATA,
    PROJECT_ROOT,
    Outcome,
    Split,
    dataset_name,
    environment,
    find_datasets,
    load_dataset,
    metrics,
    protocol_split,
    run_project_detector,
    say,
    write_json,
)
from bench.images import DEFAULT_DATA as MNIST_DATA
from bench.images import load_mnist, one_class_split, run_project_images
from vae_anomaly.model.families import FAMILIES

Task = tuple[str, int, Callable[[], Split]]

UNCONDITIONAL = [name for name, family in FAMILIES.items() if not family.conditional]
"""The default families: those that model x alone (a CVAE needs a context column, which these data
sets do not name; its contextual benchmark is its own)."""


def tabular_tasks(data_dir: Path, seeds: list[int], wanted: list[str] | None, order: str = "dataset") -> Iterator[Task]:
    """(data set, seed) tasks, smallest set first; `order` says which loop is outer."""
    paths = find_datasets(data_dir, wanted)
    pairs = [(p, s) for p in paths for s in seeds] if order == "dataset" else [(p, s) for s in seeds for p in paths]
    for path, seed in pairs:
        yield dataset_name(path), seed, lambda path=path, seed=seed: protocol_split(*load_dataset(path), seed)


def mnist_tasks(path: Path, seeds: list[int], digits: list[int]) -> Iterator[Task]:
    x, labels = load_mnist(path)
    for seed in seeds:
        for digit in digits:
            yield f"digit {digit}", seed, lambda digit=digit, seed=seed: one_class_split(x, labels, digit, seed)


def run(
    tasks: Iterator[Task],
    families: list[str],
    runner: Callable[[Split, int, dict[str, Any]], Outcome],
    out: Path,
    meta: dict[str, Any],
    resume: bool,
) -> None:
    """Fit and score every family on every task, saving after each fit; a resumed run keeps the
    earlier runs' meta (command, start, machine) under `previous_runs`."""
    records: list[dict[str, Any]] = []
    if resume and out.exists():
        earlier = json.loads(out.read_text())
        records = earlier["records"]
        previous = earlier["meta"].pop("previous_runs", [])
        meta = {**meta, "previous_runs": [*previous, earlier["meta"]]}
    done = {(r["dataset"], r["seed"], r["family"]) for r in records}
    for dataset, seed, make_split in tasks:
        todo = [f for f in families if (dataset, seed, f) not in done]
        if not todo:
            continue
        split = make_split()
        for family in todo:
            record: dict[str, Any] = {"dataset": dataset, "seed": seed, "family": family}
            try:
                outcome = runner(split, seed, {"family": family})
                auroc, auprc, _ = metrics(split.y_test, outcome.scores)
                record.update(
                    auroc=auroc, auprc=auprc, fit_seconds=outcome.fit_seconds, score_seconds=outcome.score_seconds,
                    info=outcome.info,
                )  # fmt: skip
                say(f"{dataset:>20} seed {seed} {family:>10}: AUROC {auroc:.3f} AUPRC {auprc:.3f} "
                    f"fit {outcome.fit_seconds:.1f} s")  # fmt: skip
            except Exception as exc:  # one failed fit is recorded, not fatal to the run
                record["error"] = f"{type(exc).__name__}: {exc}"
                record["traceback"] = traceback.format_exc()
                say(f"{dataset:>20} seed {seed} {family:>10}: FAILED {record['error']}")
            records.append(record)
            write_json(out, {"meta": meta, "records": records})


# -- report --------------------------------------------------------------------------------------


def complete_pairs(records: list[dict[str, Any]], families: list[str]) -> set[tuple[str, int]]:
    """(data set, seed) pairs that every family finished (a failed fit counts as finished)."""
    by_pair: dict[tuple[str, int], set[str]] = {}
    for r in records:
        by_pair.setdefault((r["dataset"], r["seed"]), set()).add(r["family"])
    return {pair for pair, done in by_pair.items() if set(families) <= done}


def summarise(
    records: list[dict[str, Any]],
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, dict[str, float]], str]:
    """Per-family means over the (data set, seed) pairs every family finished, and per data set
    AUROC means over seeds; a failed fit ranks last and is left out of the means."""
    families = [f for f in FAMILIES if any(r["family"] == f for r in records)]
    pairs = complete_pairs(records, families)
    kept = [r for r in records if (r["dataset"], r["seed"]) in pairs and r["family"] in families]
    datasets = sorted({d for d, _ in pairs}, key=lambda d: [r["dataset"] for r in records].index(d))
    seeds = sorted({s for _, s in pairs})
    auroc: dict[str, dict[str, float]] = {d: {} for d in datasets}
    for d in datasets:
        for f in families:
            values = [r["auroc"] for r in kept if r["dataset"] == d and r["family"] == f and "auroc" in r]
            auroc[d][f] = float(np.mean(values)) if values else math.nan
    ranks = {f: [] for f in families}  # type: dict[str, list[float]]
    for d in datasets:
        values = np.array([-auroc[d][f] if not math.isnan(auroc[d][f]) else math.inf for f in families])
        for f, rank in zip(families, rankdata(values), strict=True):
            ranks[f].append(float(rank))
    summary: dict[str, dict[str, float]] = {}
    for f in families:
        ok = [r for r in kept if r["family"] == f and "auroc" in r]
        summary[f] = {
            "auroc": float(np.mean([auroc[d][f] for d in datasets if not math.isnan(auroc[d][f])])),
            "auprc": float(np.mean([r["auprc"] for r in ok])),
            "rank": float(np.mean(ranks[f])),
            "fit": float(np.mean([r["fit_seconds"] for r in ok])),
            "failed": float(sum(1 for r in kept if r["family"] == f and "auroc" not in r)),
        }
    seeds_of = {d: sorted(s for dd, s in pairs if dd == d) for d in datasets}
    if len({tuple(v) for v in seeds_of.values()}) <= 1:
        coverage = f"{len(datasets)} data sets × seeds {', '.join(map(str, seeds))} ({len(pairs)} pairs)"
    else:
        coverage = f"{len(datasets)} data sets, {len(pairs)} (data set, seed) pairs"
    coverage += ": " + ", ".join(f"{d} ({', '.join(map(str, seeds_of[d]))})" for d in datasets)
    return families, summary, auroc, coverage


def vae_minus_ae(records: list[dict[str, Any]], datasets: list[str]) -> dict[str, list[float]]:
    """Per data set, the VAE's AUROC minus the AE's on each seed both finished (same split)."""
    value = {(r["dataset"], r["seed"], r["family"]): r["auroc"] for r in records if "auroc" in r}
    seeds = sorted({r["seed"] for r in records})
    return {
        d: [value[d, s, "vae"] - value[d, s, "ae"] for s in seeds if (d, s, "vae") in value and (d, s, "ae") in value]
        for d in datasets
    }


def markdown(title: str, records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    families, summary, auroc, coverage = summarise(records)
    lines = [f"### {title}", "", f"Coverage: {coverage}; every family on each pair.", ""]
    if meta:
        env = meta.get("environment", {})
        runs = [*meta.get("previous_runs", []), meta]
        lines += [
            "Run: "
            + "; ".join(f"`{m.get('command', '?')}` started {m.get('started', '?')}" for m in runs)
            + f". Machine: {env.get('machine')}, {env.get('cpu_count')} CPU(s), torch {env.get('torch')} "
            + f"({env.get('torch_threads')} torch thread(s)), numpy {env.get('numpy')}.",
            "",
        ]
    base_fit = summary["vae"]["fit"] if "vae" in summary else math.nan
    lines += [
        "| family | mean AUROC | mean AUPRC | average rank | mean fit s | fit ÷ `vae`'s | failed fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in sorted(families, key=lambda f: summary[f]["rank"]):
        s = summary[f]
        lines.append(
            f"| `{f}` | {s['auroc']:.3f} | {s['auprc']:.3f} | {s['rank']:.2f} | {s['fit']:.1f} "
            f"| {s['fit'] / base_fit:.2f} | {int(s['failed'])} |"
        )
    lines += ["", "AUROC per data set (mean over the seeds above; best in bold):", ""]
    lines += ["| data set | " + " | ".join(f"`{f}`" for f in families) + " |", "|---" * (len(families) + 1) + "|"]
    for d, row in auroc.items():
        best = max(v for v in row.values() if not math.isnan(v))
        cells = [f"**{row[f]:.3f}**" if row[f] == best else f"{row[f]:.3f}" for f in families]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    if "vae" in families and "ae" in families:
        pairs = complete_pairs(records, families)
        kept = [r for r in records if (r["dataset"], r["seed"]) in pairs]
        per_seed = vae_minus_ae(kept, list(auroc))
        if any(len(v) > 1 for v in per_seed.values()):
            lines += [
                "",
                "VAE − AE AUROC per data set and seed (same split; *consistent*: the same sign on every seed "
                "and a mean beyond 0.01):",
                "",
                "| data set | mean | per seed | verdict |",
                "|---|---|---|---|",
            ]
            for d, values in per_seed.items():
                mean = float(np.mean(values))
                same_sign = all(v > 0 for v in values) or all(v < 0 for v in values)
                verdict = ("VAE" if mean > 0 else "AE") if same_sign and abs(mean) > 0.01 and len(values) > 1 else "–"
                cells = ", ".join(f"{v:+.3f}" for v in values)
                lines.append(f"| {d} | {mean:+.3f} | {cells} | {verdict} |")
        diffs = {d: row["vae"] - row["ae"] for d, row in auroc.items()}
        wins = sorted((d for d, v in diffs.items() if v > 0.01), key=lambda d: -diffs[d])
        losses = sorted((d for d, v in diffs.items() if v < -0.01), key=lambda d: diffs[d])
        ties = [d for d, v in diffs.items() if abs(v) <= 0.01]
        lines += [
            "",
            "VAE − AE AUROC per data set: VAE better by > 0.01 on "
            + (", ".join(f"{d} (+{diffs[d]:.3f})" for d in wins) or "none")
            + "; worse by > 0.01 on "
            + (", ".join(f"{d} ({diffs[d]:.3f})" for d in losses) or "none")
            + f"; within 0.01 on {len(ties)}.",
        ]
    return "\n".join(lines) + "\n"


def report(paths: list[Path], markdown_path: Path | None) -> int:
    parts = []
    for path in paths:
        payload = json.loads(path.read_text())
        parts.append(markdown(payload["meta"]["title"], payload["records"], payload["meta"]))
    text = "\n".join(parts)
    print(text)
    if markdown_path:
        markdown_path.write_text(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="part", required=True)
    for name in ("tabular", "mnist"):
        part = commands.add_parser(name)
        part.add_argument("--data", type=Path, default=None)
        part.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        part.add_argument("--families", nargs="+", default=UNCONDITIONAL, choices=UNCONDITIONAL)
        part.add_argument("--out", type=Path, required=True, help="results JSON, written after every fit")
        part.add_argument("--resume", action="store_true")
        if name == "tabular":
            part.add_argument("--datasets", nargs="+", metavar="NAME")
            part.add_argument(
                "--order",
                choices=("dataset", "seed"),
                default="dataset",
                help="outer loop: every seed of a set before the next set (default), or seed by seed",
            )
        else:
            part.add_argument("--digits", type=int, nargs="+", default=list(range(10)), choices=range(10))
    summary = commands.add_parser("report", help="tables from results files")
    summary.add_argument("results", type=Path, nargs="+")
    summary.add_argument("--markdown", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.part == "report":
        return report(args.results, args.markdown)
    logging.getLogger("vae_anomaly.training.trainer").setLevel(logging.ERROR)  # small calibration sets: noise here
    meta = {"environment": environment(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.part == "tabular":
        data = args.data or (PROJECT_ROOT / DEFAULT_DATA)
        meta["title"] = "Tabular: ADBench sets"
        tasks = tabular_tasks(data, args.seeds, args.datasets, args.order)
        runner: Callable[[Split, int, dict[str, Any]], Outcome] = run_project_detector
    else:
        data = args.data or (PROJECT_ROOT / MNIST_DATA)
        meta["title"] = "Images: one-class MNIST"
        tasks = mnist_tasks(data, args.seeds, args.digits)
        runner = run_project_images
    meta["command"] = "python -m bench.families " + " ".join(
        str(a) for a in (argv if argv is not None else __import__("sys").argv[1:])
    )
    run(tasks, args.families, runner, args.out, meta, args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
