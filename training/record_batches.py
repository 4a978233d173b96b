"""Parquet and CSV read a record batch at a time, in memory bounded by the batch, not the file.

`train --stream` and the streaming `score` read their input here. Both are slow consumers (a few
thousand rows per second on a small CPU) of a fast reader, and pyarrow's convenient readers hold
what they read ahead of such a consumer for the whole file:

- `pyarrow.dataset`'s scanner ignores its `batch_readahead` / `fragment_readahead` limits against a
  slow consumer (apache/arrow#39808) and Parquet's `pre_buffer=True` (the default of both
  `pyarrow.dataset` and `pyarrow.parquet.ParquetFile`) caches the column chunks it coalesced;
- `pyarrow.csv.open_csv` on a path (or a random-access `OSFile`) reads blocks ahead without bound.

Measured (pyarrow 26.0.1, a 4 000 000-row table of `bench.scale`, each batch held 20 ms as a
consumer would; peak bytes of Arrow's memory pool): `pyarrow.dataset` 87 MB (36 MB without the
pause), `ParquetFile(pre_buffer=True).iter_batches` 86 MB, `ParquetFile(pre_buffer=False)`, one row
group at a time, 8 MB whatever the file's length; CSV `open_csv(path)` 150 MB for 4 M rows against
64 MB for 1 M, `open_csv` on a Python file object 16 MB for both. Those two flat forms are used here.

Parquet batches never cross a row group (each row group is read on its own), which is what lets the
Dask engine (one partition per row group) give the streaming engine's bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_BLOCK_BYTES = 1 << 20
"""Bytes of CSV text parsed at a time (pyarrow's block size, its default); a batch is at most one
block, so a CSV batch may hold fewer rows than asked."""


class FormatError(ValueError):
    """The path is neither Parquet (a file or a folder of parts) nor CSV."""


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of `path`: itself, or a folder's parts in name order (files whose names
    start with '.' or '_', such as `_metadata`, skipped, as `pyarrow.dataset` does)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted(
        (p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))), key=lambda p: str(p)
    )


def is_parquet(path: Path) -> bool:
    return Path(path).is_dir() or Path(path).suffix.lower() in PARQUET_SUFFIXES


def check_format(path: Path) -> None:
    """Refuse what neither reader reads (raises `FormatError` naming the suffixes that work)."""
    if not is_parquet(path) and Path(path).suffix.lower() != ".csv":
        raise FormatError(f"{path}: reads .parquet (a file or a folder of parts) or .csv, not {Path(path).suffix!r}")


@dataclass(frozen=True)
class Skipped:
    """A batch that `keep` turned down: only its number of rows."""

    num_rows: int


def record_batches(
    path: Path, batch_rows: int, text_columns: Sequence[str] = (), keep: Callable[[int], bool] | None = None
) -> Iterator[Any]:
    """`pyarrow.RecordBatch`es of at most `batch_rows` rows, in file order.

    `text_columns` (CSV only) are read as text whatever they look like (a categorical feature whose
    values are digits); empty CSV cells are nulls. With `keep`, batch i (counted over the whole
    input) comes as a `Skipped` of its row count unless `keep(i)`: a Parquet row group none of whose
    batches is kept is not read at all (its rows are counted from the footer), which is how a rank
    or a loader worker reads only its own shard; CSV has no index of its rows, so every batch is
    parsed and `keep` only spares the caller's work. Raises `FormatError`, or pyarrow's `OSError` /
    `ArrowInvalid` (a `ValueError`) for an unreadable file."""
    check_format(path)
    wanted = keep or (lambda index: True)
    if is_parquet(path):
        yield from _parquet_batches(parquet_files(path), batch_rows, wanted)
    else:
        for index, batch in enumerate(_csv_batches(Path(path), batch_rows, text_columns)):
            yield batch if wanted(index) else Skipped(batch.num_rows)


def _parquet_batches(files: list[Path], batch_rows: int, keep: Callable[[int], bool]) -> Iterator[Any]:
    import pyarrow.parquet as pq

    index = 0  # of the next batch over all files
    for file in files:
        reader = pq.ParquetFile(str(file), pre_buffer=False)
        try:
            for group in range(reader.metadata.num_row_groups):
                rows = reader.metadata.row_group(group).num_rows
                sizes = [min(batch_rows, rows - start) for start in range(0, rows, batch_rows)]
                kept = [keep(index + i) for i in range(len(sizes))]
                if any(kept):
                    batches = reader.iter_batches(batch_size=batch_rows, row_groups=[group])
                    for batch, take in zip(batches, kept, strict=True):
                        yield batch if take else Skipped(batch.num_rows)
                else:
                    yield from (Skipped(size) for size in sizes)
                index += len(sizes)
        finally:
            reader.close()


def _csv_batches(path: Path, batch_rows: int, text_columns: Sequence[str]) -> Iterator[Any]:
    import pyarrow as pa
    from pyarrow import csv

    convert = csv.ConvertOptions(column_types={name: pa.string() for name in text_columns}, strings_can_be_null=True)
    read = csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    with open(path, "rb") as source:  # a plain file object: the reader then reads one block at a time
        for block in csv.open_csv(source, read_options=read, convert_options=convert):
            for start in range(0, block.num_rows, batch_rows):
                yield block.slice(start, batch_rows)


def count_rows(path: Path) -> int:
    """Rows of the input: from the Parquet footers, or one streaming read of the CSV."""
    import pyarrow.parquet as pq

    check_format(path)
    if is_parquet(path):
        return sum(pq.ParquetFile(str(file)).metadata.num_rows for file in parquet_files(path))
    return sum(batch.num_rows for batch in _csv_batches(Path(path), 1 << 30, ()))
