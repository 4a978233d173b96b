"""Scoring tables too large for memory: `score_frame`, a pandas-in / pandas-out wrapper around the
one scoring path (`Detector.score_results`, what `/score` runs), then two engines around it:

- `score_file_streaming`: one process, the input read in record batches (`training.record_batches`) and
  the output written a batch at a time (Parquet row groups, CSV or JSON lines appended), so memory
  is bounded by the batch size, not the file;
- `score_file_dask`: `read_parquet → map_partitions(score_frame) → to_parquet` on a Dask cluster (a
  `LocalCluster` when no scheduler address is given); each worker process loads the artifact once.

`score_frame` knows no engine, so the same function serves Spark's `mapInPandas` (see README).
Tabular models only: a frame is a table.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vae_anomaly.model.detector import Detector
from vae_anomaly.training import record_batches
from vae_anomaly.training.data import DataError, frame_columns

if TYPE_CHECKING:
    import pandas as pd

OUTPUT_COLUMNS = (
    "score",
    "elbo",
    "reconstruction_error",
    "p_value",
    "is_anomaly",
    "thresholds_exceeded",
    "missing",
    "top_features",
)
"""The columns `score_frame` returns (lists joined by ';', `top_features` as JSON text), as the
CSV output of `vae-anomaly score` has always had them."""


def flat_row(result: dict[str, object]) -> dict[str, object]:
    """A `/score` result object as one flat table row (see `OUTPUT_COLUMNS`)."""
    row = {key: result[key] for key in ("score", "elbo", "reconstruction_error", "p_value", "is_anomaly")}
    row["thresholds_exceeded"] = ";".join(result["thresholds_exceeded"])  # type: ignore[arg-type]
    row["missing"] = ";".join(result["missing"])  # type: ignore[arg-type]
    row["top_features"] = orjson.dumps(result["top_features"]).decode()
    return row


def _check_tabular(detector: Detector) -> None:
    if detector.kind.name != "tabular":
        raise DataError(f"score_frame scores tables; this model is of kind {detector.kind.name!r}")


def frame_inputs(detector: Detector, frame: pd.DataFrame) -> Any:
    """A DataFrame's feature columns as the detector's checked inputs (extra columns are ignored,
    categorical features are compared by their text, as when a CSV is read with the schema)."""
    _check_tabular(detector)
    schema = detector.kind.schema  # type: ignore[attr-defined]
    condition = detector.kind.condition_spec()
    names = [*schema.names, *(condition.names if condition is not None else [])]  # a cvae's context is an input
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise DataError(f"columns absent from the data: {', '.join(missing)}")
    features = frame[names].copy()
    for feature in schema.of_type("categorical"):
        column = features[feature.name]
        features[feature.name] = column.astype(object).where(column.isna(), column.astype(str))
    return detector.kind.columns_from_table(frame_columns(features))  # type: ignore[attr-defined]


def score_frame(
    detector: Detector, frame: pd.DataFrame, explain: int = 3, id_column: str | None = None
) -> pd.DataFrame:
    """Score every row of `frame`; one output row per input row, same index, `OUTPUT_COLUMNS`
    (after an `id` column copied from `id_column` when one is named: it is never a feature)."""
    import pandas as pd

    if id_column is not None and id_column not in frame.columns:
        raise DataError(f"id column {id_column!r} not found; columns: {', '.join(map(str, frame.columns))}")
    results = detector.score_results(frame_inputs(detector, frame), explain=explain) if len(frame) else []
    out = pd.DataFrame([flat_row(r) for r in results], columns=list(OUTPUT_COLUMNS), index=frame.index)
    out = out.astype(output_dtypes())
    if id_column is not None:
        out.insert(0, "id", frame[id_column].to_numpy())
    return out


def output_dtypes() -> dict[str, str]:
    return {
        "score": "float64",
        "elbo": "float64",
        "reconstruction_error": "float64",
        "p_value": "float64",
        "is_anomaly": "bool",
        "thresholds_exceeded": "str",
        "missing": "str",
        "top_features": "str",
    }


def iter_frames(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The input file in record batches of at most `batch_rows` rows (Parquet: within row groups),
    read without read-ahead (`training.record_batches`), so memory is bounded by the batch."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        for batch in record_batches.record_batches(path, batch_rows):
            yield batch.to_pandas()
    except record_batches.FormatError as exc:
        raise DataError(f"{path}: batch scoring reads .parquet (a file or a folder of parts) or .csv") from exc


def score_file_streaming(
    detector: Detector,
    data: Path,
    out: Path | None,
    explain: int = 3,
    batch_rows: int = 65_536,
    id_column: str | None = None,
) -> int:
    """Score `data` a record batch at a time into `out` (.parquet, .csv, .jsonl; stdout JSON lines
    when None); returns the rows scored. Memory is bounded by `batch_rows`, not the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = out.suffix.lower() if out is not None else ".jsonl"
    if suffix not in (".parquet", ".csv", ".jsonl"):
        raise DataError(f"{out}: --out must end in .parquet, .csv or .jsonl")
    rows = 0
    writer: Any = None
    sink: Any = sys.stdout.buffer if out is None else None
    try:
        for frame in iter_frames(data, batch_rows):
            scored = score_frame(detector, frame, explain, id_column)
            rows += len(scored)
            if suffix == ".parquet":
                table = pa.Table.from_pandas(scored, preserve_index=False)
                writer = writer or pq.ParquetWriter(str(out), table.schema)
                writer.write_table(table)
            elif suffix == ".csv":
                assert out is not None
                scored.to_csv(out, mode="a" if rows > len(scored) else "w", header=rows == len(scored), index=False)
            else:
                if sink is None:
                    assert out is not None
                    sink = open(out, "wb")  # noqa: SIM115 - closed below
                for record in scored.to_dict("records"):
                    record["top_features"] = orjson.Fragment(record["top_features"].encode())
                    sink.write(orjson.dumps(record) + b"\n")
    finally:
        if writer is not None:
            writer.close()
        if sink is not None and sink is not sys.stdout.buffer:
            sink.close()
    return rows


@functools.lru_cache(maxsize=4)
def _worker_detector(model_dir: str, device: str) -> Detector:
    """The artifact, loaded once per worker process (the cache lives in the worker)."""
    return Detector.load(Path(model_dir), device)


def score_partition(frame: pd.DataFrame, model_dir: str, device: str, explain: int) -> pd.DataFrame:
    """`score_frame` on one Dask (or Spark) partition, with the worker's cached detector."""
    return score_frame(_worker_detector(model_dir, device), frame, explain)


def score_file_dask(
    model_dir: Path,
    data: Path,
    out: Path,
    scheduler: str | None = None,
    explain: int = 3,
    device: str = "cpu",
    workers: int = 2,
    processes: bool = True,
) -> int:
    """Score `data` (.parquet file or folder of parts, or .csv) on a Dask cluster into the Parquet
    folder `out` (one part per partition); returns the rows scored. Without `scheduler`, a
    `LocalCluster` of `workers` single-threaded workers (`processes=False`: threads of this process,
    which tests use)."""
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster

    Detector.load(model_dir, "cpu")  # fail here, not on every worker, if the artifact is bad
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: file not found")
    # One partition per Parquet row group: the batches `score_file_streaming` scores, so the two
    # engines give the same bits.
    frame = (
        dd.read_csv(str(data)) if data.suffix.lower() == ".csv" else dd.read_parquet(str(data), split_row_groups=True)
    )
    meta = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in output_dtypes().items()})
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes)
    try:
        with Client(scheduler or cluster):
            scored = frame.map_partitions(score_partition, str(Path(model_dir).resolve()), device, explain, meta=meta)
            scored.to_parquet(str(out), write_index=False)
    finally:
        if cluster is not None:
            cluster.close()
    return record_batches.count_rows(Path(out))
