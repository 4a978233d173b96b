"""Peak memory and throughput of `vae-anomaly train --stream` and `vae-anomaly score` on generated
tables of growing size: memory should stay flat while the rows grow.

    python -m bench.scale --rows 1000000 4000000 16000000 --work /tmp/scale-bench

For each size: writes a Parquet table (row groups of 65 536 rows, written a group at a time, so the
generator itself stays small), trains with `train --stream --epochs 1` (`--epochs`: a fixed small
number of epochs, so that 16 M rows fit in an afternoon; each epoch reads the file, plus the first
pass and the training ELBO) and scores it with `score --out scores.parquet` (record batches), each
as its own process; the peak RSS of each process comes from `os.wait4`. Each step's result is
appended to `--results` (JSON lines) as it ends, and a rerun skips the steps already there.
Nothing from ../shared is needed: the rows are synthetic (the demo data's
structure: a linear pair, a count, a category tied to a value, a flag).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GROUP = 65_536


def write_rows(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` normal rows as Parquet, one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    try:
        for start in range(0, rows, GROUP):
            n = min(GROUP, rows - start)
            a = rng.normal(10.0, 2.0, n)
            table = pa.table(
                {
                    "a": a,
                    "b": 3.0 * a + rng.normal(0.0, 0.5, n),
                    "items": rng.poisson(3.0, n) + 1,
                    "color": np.where(a > 10.0, "red", rng.choice(["green", "blue"], n)),
                    "flag": rng.random(n) < 0.2,
                }
            )
            writer = writer or pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def run(command: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one child process. On a shared machine the
    CPU seconds (user + system) say more about the work than the wall time."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: kilobytes


def done_steps(results: Path) -> set[tuple[int, str]]:
    """(rows, step) already measured in the results file (JSON lines), so a rerun resumes."""
    if not results.exists():
        return set()
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(line["rows"], line["step"]) for line in lines if "step" in line}


def environment() -> dict[str, object]:
    import platform

    import pyarrow
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyarrow": pyarrow.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def report(results: Path) -> str:
    """The results file as the markdown table of docs/BENCHMARKS.md: per size, each step's peak RSS
    and rows/s, and each step's peak RSS as a multiple of the smallest size's."""
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    steps = {(line["rows"], line["step"]): line for line in lines if "step" in line}
    sizes = sorted({rows for rows, _ in steps})
    first = {step: next((steps[(r, step)] for r in sizes if (r, step) in steps), None) for step in ("train", "score")}
    table = [
        "| rows | `train --stream --epochs 1` peak RSS | train rows/s | `score` peak RSS | score rows/s |",
        "|---|---|---|---|---|",
    ]
    for rows in sizes:
        cells = [f"{rows:,}".replace(",", " ")]
        for step in ("train", "score"):
            line, base = steps.get((rows, step)), first[step]
            if line is None or base is None:
                cells += ["not measured", ""]
                continue
            ratio = line["peak_rss_mb"] / base["peak_rss_mb"]
            cells += [f"{line['peak_rss_mb']} MB (×{ratio:.2f})", f"{line['rows_per_second']:,}".replace(",", " ")]
        table.append("| " + " | ".join(cells) + " |")
    return "\n".join(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/vae-anomaly-scale"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--results", type=Path, help="JSON lines, one per step, appended as each ends (resumes)")
    parser.add_argument("--steps", nargs="+", choices=["train", "score"], default=["train", "score"])
    parser.add_argument("--report", action="store_true", help="print the results file as a markdown table, run nothing")
    args = parser.parse_args()
    if args.report:
        print(report(args.results or args.work / "results.jsonl"))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / "results.jsonl"
    done = done_steps(results)
    with results.open("a") as sink:
        sink.write(json.dumps({"environment": environment(), "argv": sys.argv[1:]}) + "\n")
    cli = [sys.executable, "-m", "vae_anomaly.training.cli"]
    device = ["--device", "cpu"]
    epochs = str(args.epochs)
    for rows in args.rows:
        data = args.work / f"rows-{rows}.parquet"
        if not data.exists():
            write_rows(data, rows)
        model = args.work / f"model-{rows}"
        out = args.work / f"scores-{rows}.parquet"
        steps = {
            "train": [*cli, "train", str(data), "--stream", "--out", str(model), "--quiet", "--epochs", epochs],
            "score": [*cli, "score", str(model), str(data), "--out", str(out)],
        }
        for step, command in steps.items():
            if (rows, step) in done or step not in args.steps:
                continue
            wall, cpu, rss = run([*command, *device])
            result = {
                "rows": rows,
                "step": step,
                "epochs": args.epochs if step == "train" else None,
                "peak_rss_mb": round(rss),
                "seconds": round(wall, 1),
                "rows_per_second": round(rows / wall),
                "cpu_seconds": round(cpu, 1),
                "rows_per_cpu_second": round(rows / cpu),
                "load_average": os.getloadavg(),
                "finished": time.strftime("%H:%M:%S UTC", time.gmtime()),
            }
            with results.open("a") as sink:
                sink.write(json.dumps(result) + "\n")
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
