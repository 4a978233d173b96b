"""The streaming readers (`train --stream`'s `read_chunks`, the streaming `score`'s `iter_frames`)
hold one record batch, not the file: Arrow's memory pool, sampled while a slow consumer holds each
batch, stays within a few batches however long the file is. With `pyarrow.dataset` (and Parquet's
default `pre_buffer`, or `open_csv` on a path) it grew with the file (`training.record_batches`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_anomaly.training.batch_scoring import iter_frames
from vae_anomaly.training.record_batches import count_rows, record_batches
from vae_anomaly.training.streaming import ReadOptions, read_chunks

GROUPS, GROUP_ROWS = 48, 4096


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.normal(size=n),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )


@pytest.fixture(scope="module")
def long_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("long")
    frame = _frame(GROUPS * GROUP_ROWS, 0)
    parquet, csv = folder / "rows.parquet", folder / "rows.csv"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet, row_group_size=GROUP_ROWS)
    frame.to_csv(csv, index=False)
    return {"parquet": parquet, "csv": csv}


def _held_bytes(batches) -> tuple[int, int]:
    """(most bytes in Arrow's pool above the start while a batch is held, rows read); each batch
    is held 2 ms, as the trainer or scorer would, so a reader that reads ahead gets the time to."""
    pool = pa.default_memory_pool()
    start, most, rows = pool.bytes_allocated(), 0, 0
    for batch in batches:
        time.sleep(0.002)
        most = max(most, pool.bytes_allocated() - start)
        rows += len(batch) if not isinstance(batch, tuple) else len(batch[1]["__row__"])
    return most, rows


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_readers_hold_a_batch_not_the_file(long_files: dict[str, Path], fmt: str, monkeypatch):
    from vae_anomaly.training import record_batches as reader

    monkeypatch.setattr(reader, "CSV_BLOCK_BYTES", 1 << 16, raising=False)  # ~1/100 of the file
    path = long_files[fmt]
    whole = pa.Table.from_pandas(_frame(GROUPS * GROUP_ROWS, 0), preserve_index=False).nbytes
    for batches in (
        iter_frames(path, GROUP_ROWS),
        read_chunks(path, ReadOptions(chunk_rows=GROUP_ROWS, text_columns=["color"])),
    ):
        most, rows = _held_bytes(batches)
        assert rows == GROUPS * GROUP_ROWS
        assert most < whole / 4, f"{fmt}: {most} bytes held while reading, the whole table is {whole}"


def test_parquet_batches_stay_within_row_groups(tmp_path: Path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(250, 1), preserve_index=False), path, row_group_size=100)
    assert [b.num_rows for b in record_batches(path, 64)] == [64, 36, 64, 36, 50]
    assert count_rows(path) == 250


def test_a_folder_of_parts_is_read_in_name_order_and_metadata_skipped(tmp_path: Path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, n in enumerate((30, 20)):
        frame = _frame(n, i).assign(part=i)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"part.{i}.parquet")
    (folder / "_SUCCESS").write_text("")
    parts = [b.column("part").to_pylist() for b in record_batches(folder, 1000)]
    assert parts == [[0] * 30, [1] * 20] and count_rows(folder) == 50


def test_csv_text_columns_and_empty_cells(tmp_path: Path):
    path = tmp_path / "rows.csv"
    path.write_text("code,x\n007,1.5\n,2.5\n12,\n")
    (batch,) = record_batches(path, 10, text_columns=["code"])
    assert batch.column("code").to_pylist() == ["007", None, "12"]
    assert batch.column("x").to_pylist() == [1.5, 2.5, None]
    assert count_rows(path) == 3


def test_other_formats_are_refused(tmp_path: Path):
    from vae_anomaly.training.record_batches import FormatError

    with pytest.raises(FormatError, match=r"reads \.parquet .* or \.csv, not '\.json'"):
        list(record_batches(tmp_path / "rows.json", 10))


def test_a_rank_reads_only_its_own_row_groups(tmp_path: Path, monkeypatch):
    """`keep` (a rank's or a loader worker's share of the chunks): row groups none of whose chunks
    is kept are not read, and the kept chunks keep their numbers and their rows' numbers."""
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(600, 2), preserve_index=False), path, row_group_size=100)
    groups_read: list[list[int]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def counted(self, *args, row_groups=None, **kwargs):
        groups_read.append(list(row_groups))
        return iter_batches(self, *args, row_groups=row_groups, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted)
    options = ReadOptions(chunk_rows=100)
    ranks = [list(read_chunks(path, options, keep=lambda chunk, r=r: chunk % 2 == r)) for r in (0, 1)]
    assert groups_read == [[0], [2], [4], [1], [3], [5]]
    assert [chunk for chunk, _ in ranks[0]] == [0, 2, 4] and [chunk for chunk, _ in ranks[1]] == [1, 3, 5]
    assert ranks[1][0][1]["__row__"].tolist() == list(range(100, 200))
    every = sorted(row for rank in ranks for _, columns in rank for row in columns["__row__"].tolist())
    assert every == list(range(600))
    whole = {chunk: columns for chunk, columns in read_chunks(path, options)}
    for chunk, columns in ranks[0] + ranks[1]:
        assert np.array_equal(columns["a"], whole[chunk]["a"])
