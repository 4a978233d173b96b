"""Peak memory and throughput of `vae-anomaly train --stream` and `vae-anomaly score` on generated
tables of growing size: memory should stay flat while the rows grow.

    python -m bench.scale --rows 1000000 4000000 --work /tmp/scale-bench

For each size: writes a Parquet table (row groups of 65 536 rows, written a group at a time, so the
generator itself stays small), trains with `train --stream --epochs 1` and scores it with
`score --out scores.parquet` (record batches), each as its own process; the peak RSS of each process
comes from `os.wait4`. Nothing from ../shared is needed: the rows are synthetic (the demo data's
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


def run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return wall, usage.ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/vae-anomaly-scale"))
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "vae_anomaly.training.cli"]
    results = []
    for rows in args.rows:
        data = args.work / f"rows-{rows}.parquet"
        if not data.exists():
            write_rows(data, rows)
        model = args.work / f"model-{rows}"
        train = [*cli, "train", str(data), "--stream", "--out", str(model), "--epochs", str(args.epochs), "--quiet"]
        train_wall, train_rss = run([*train, "--device", "cpu"])
        out = args.work / f"scores-{rows}.parquet"
        score_wall, score_rss = run([*cli, "score", str(model), str(data), "--out", str(out), "--device", "cpu"])
        result = {
            "rows": rows,
            "train_peak_rss_mb": round(train_rss),
            "train_seconds": round(train_wall, 1),
            "train_rows_per_second": round(rows * args.epochs / train_wall),
            "score_peak_rss_mb": round(score_rss),
            "score_seconds": round(score_wall, 1),
            "score_rows_per_second": round(rows / score_wall),
        }
        results.append(result)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
