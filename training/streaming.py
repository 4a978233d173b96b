"""Training a tabular model on a Parquet or CSV file larger than memory.

The file is read in record batches ("chunks", `training.record_batches`: pyarrow's Parquet and CSV
readers set up so that they do not read ahead of the consumer); nothing holds more than one chunk
of training rows, plus the capped validation and calibration splits.

1. One streaming pass (`scan`) fits the schema and the preprocessing with mergeable statistics:
   per numeric column the count, mean and M2 of the training rows (Chan et al.'s pairwise update),
   whether every value is an integer; per text column its distinct values, capped at
   `VOCABULARY_CAP` (an ID-like column is refused with a message, not learnt). On data that fits in
   memory the result equals `infer_schema` on the normal rows and `fit_preprocessing` on the same
   training rows (tested to 1e-12). It is a full pass, not a sample: a category seen once still
   gets its one-hot slot.
2. Rows are assigned to train / validation / calibration by a hash of their row number in the file
   and the seed (`row_split`), not by a permutation: no pass needs to hold an index of all rows,
   and every pass (and every rank) agrees on the assignment.
3. Validation and calibration are capped at `HELD_OUT_CAP` rows each; the manifest's calibration
   scores, hence its size, stop growing with the data.
4. Training streams the chunks through an `IterableDataset` split by rank and loader worker
   (`StreamedRows`, a `training.rows.TrainRows`): each epoch every training row is seen once,
   chunks and the rows within them shuffled per epoch. Under `torchrun` chunk i belongs to rank
   i mod world, and a rank reads only its own chunks' Parquet row groups (CSV: it parses every
   chunk and keeps its own); every rank runs the same number of steps, the smallest rank's, so an
   epoch may skip up to a chunk's worth of rows on larger ranks. The first pass (schema, statistics,
   held-out rows) reads the whole file on every rank, so that every rank fits the same schema
   without a collective.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vae_anomaly.model.detector import resolve_device
from vae_anomaly.model.errors import SchemaError
from vae_anomaly.model.families.base import FamilyNetwork
from vae_anomaly.model.kinds.tabular.kind import TabularKind, TabularKindConfig, TabularOptions, tabular_network_config
from vae_anomaly.model.kinds.tabular.preprocessing import (
    MIN_SCALE,
    Columns,
    NumericStats,
    Preprocessing,
    TabularCodec,
    check_columns,
)
from vae_anomaly.model.kinds.tabular.schema import FALSE_STRINGS, TRUE_STRINGS, FeatureSpec, Schema
from vae_anomaly.training import record_batches
from vae_anomaly.training.data import DataError, frame_columns, normal_mask
from vae_anomaly.training.distributed import World
from vae_anomaly.training.trainer import TrainConfig, TrainResult, fit_rows

logger = logging.getLogger(__name__)

HELD_OUT_CAP = 100_000
"""Most rows kept for validation and for calibration each. Why 10⁵: the smallest default target
false-positive rate is 10⁻³ (`critical`), which needs at least 999 calibration rows to be
guaranteed at all; with 10⁵ about 100 calibration scores lie above that threshold, so the rate it
achieves is known to about ±10 % (1/√100), and the p-values resolve steps of 10⁻⁵. The p-value
lookup stays exact on the capped set: it is the same empirical distribution, only smaller."""

VOCABULARY_CAP = 10_000
"""Most distinct values a text column may have to be learnt as a categorical feature; past it the
column is ID-like (one-hot slots nobody sees twice) and training stops with a message."""

DEFAULT_CHUNK_ROWS = 65_536

_BOOLISH = TRUE_STRINGS | FALSE_STRINGS


def row_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) for each row number: splitmix64 of (row, seed), vectorised."""
    with np.errstate(over="ignore"):
        x = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


TRAIN, VALIDATION, CALIBRATION = 0, 1, 2


def row_split(index: np.ndarray, seed: int, validation: float, calibration: float) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (calibration) for each row number; fractions of all rows."""
    u = row_uniform(index, seed)
    return np.where(u < calibration, CALIBRATION, np.where(u < calibration + validation, VALIDATION, TRAIN))


@dataclass
class ReadOptions:
    """How the file is read: chunk size, label filtering, dropped columns, text columns."""

    chunk_rows: int = DEFAULT_CHUNK_ROWS
    label_column: str | None = None
    normal_value: str | None = None
    exclude: list[str] = field(default_factory=list)
    text_columns: list[str] = field(default_factory=list)  # categorical by the schema: read as text
    seed: int = 0
    validation_fraction: float = 0.1  # of all rows in the file; see `held_out_fractions`
    calibration_fraction: float = 0.2

    def split(self, rows: np.ndarray) -> np.ndarray:
        """Each row's part (`row_split`) from its row number in the file."""
        return row_split(rows, self.seed, self.validation_fraction, self.calibration_fraction)


def held_out_fractions(total_rows: int, config: TrainConfig) -> tuple[float, float]:
    """Validation and calibration fractions of the file's rows, shrunk so each part expects at most
    `HELD_OUT_CAP` rows: past the cap, rows train instead of being read and dropped."""
    cap = HELD_OUT_CAP / max(total_rows, 1)
    return min(config.validation_fraction, cap), min(config.calibration_fraction, cap)


def count_rows(path: Path, options: ReadOptions) -> int:
    """Rows in the file (Parquet: from its metadata; CSV: one read)."""
    try:
        return record_batches.count_rows(Path(path))
    except record_batches.FormatError as exc:
        raise DataError(f"{path}: streaming reads .parquet or .csv, not {Path(path).suffix!r}") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable: {exc}") from exc


def read_chunks(
    path: Path, options: ReadOptions, keep: Callable[[int], bool] | None = None
) -> Iterator[tuple[int, Columns]]:
    """(chunk number, normal feature rows' columns plus the rows' numbers in the file under the key
    "__row__") for each record batch of the file, or, with `keep`, for those chunks i with
    `keep(i)` only: the others are not read where the format allows (Parquet row groups)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        batches = record_batches.record_batches(path, options.chunk_rows, options.text_columns, keep)
        offset = 0
        for chunk, record_batch in enumerate(batches):
            if isinstance(record_batch, record_batches.Skipped):
                offset += record_batch.num_rows
                continue
            frame = record_batch.to_pandas()
            rows = np.arange(offset, offset + len(frame), dtype=np.int64)
            offset += len(frame)
            if options.label_column is not None:
                if options.label_column not in frame.columns:
                    raise DataError(f"{path}: label column {options.label_column!r} not found")
                keep_rows = normal_mask(frame.pop(options.label_column).to_numpy(), options.normal_value)
                frame, rows = frame[keep_rows], rows[keep_rows]
            for name in options.exclude:
                if name not in frame.columns:
                    raise DataError(f"{path}: --exclude-columns names {name!r}, which is not a column")
                frame = frame.drop(columns=name)
            columns = frame_columns(frame)
            columns["__row__"] = rows
            yield chunk, columns
    except record_batches.FormatError as exc:
        raise DataError(f"{path}: streaming reads .parquet or .csv, not {path.suffix!r}") from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not readable in record batches: {exc}") from exc


@dataclass
class Moments:
    """count, mean and M2 (sum of squared deviations) of a stream of numbers; mergeable."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        """Merge a batch's moments (Chan, Golub & LeVeque 1979, the pairwise update)."""
        n_b = values.size
        if n_b == 0:
            return
        mean_b = float(np.mean(values))
        m2_b = float(np.sum((values - mean_b) ** 2))
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.count * n_b / n
        self.count = n

    def stats(self) -> NumericStats:
        """The standardisation `fit_preprocessing` would fit: mean and population std."""
        if self.count == 0:
            return NumericStats(center=0.0, scale=1.0)
        scale = math.sqrt(self.m2 / self.count)
        return NumericStats(center=self.mean, scale=scale if scale > MIN_SCALE else 1.0)


@dataclass
class ColumnSummary:
    """What one streaming pass learns about a column to infer its feature spec."""

    numeric_chunks: int = 0
    any_finite: bool = False
    all_integer: bool = True
    text: set[str] = field(default_factory=set)
    boolish: bool = True  # every present non-numeric value is a bool or a true/false string
    present: int = 0
    moments: Moments = field(default_factory=Moments)

    def add(self, name: str, values: np.ndarray, train: np.ndarray, as_text: bool = False) -> None:
        """Fold one chunk in; `as_text` for a column the schema makes categorical (its values
        become categories by their text, as `infer_schema` does)."""
        if values.dtype.kind in "iuf" and not as_text:
            self.numeric_chunks += 1
            as_float = values.astype(np.float64)
            if np.isinf(as_float).any():
                raise DataError(f"feature {name!r}: infinite value in the data; replace it or leave the cell empty")
            finite = as_float[~np.isnan(as_float)]
            if finite.size:
                self.any_finite = True
                self.all_integer = self.all_integer and bool(np.all(np.equal(np.mod(finite, 1), 0)))
            train_values = as_float[train]
            self.moments.add(train_values[~np.isnan(train_values)])
            return
        present = [v for v in values.tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))]
        self.present += len(present)
        self.boolish = self.boolish and all(
            isinstance(v, bool) or (isinstance(v, str) and v in _BOOLISH) for v in present
        )
        self.text.update(str(v) for v in present)
        if len(self.text) > VOCABULARY_CAP:
            raise DataError(
                f"feature {name!r} has more than {VOCABULARY_CAP} distinct values: it looks like an id; "
                "drop it with --exclude-columns"
            )

    def feature(self, name: str, given: FeatureSpec | None) -> FeatureSpec:
        """The spec `infer_feature` gives the whole column (or the override, completed)."""
        if given is not None:
            if given.type == "categorical" and given.categories is None:
                return given.model_copy(update={"categories": sorted(self.text)})
            return given
        if self.numeric_chunks and self.present:
            raise DataError(f"feature {name!r} holds numbers in some chunks and text in others; give it in --schema")
        if self.present == 0 and self.numeric_chunks:
            return FeatureSpec(name=name, type="numeric", integer=self.any_finite and self.all_integer)
        if self.present and self.boolish:
            return FeatureSpec(name=name, type="boolean")
        if not self.text:
            raise SchemaError(f"feature {name!r} has no observed value: drop it or give its type in --schema")
        return FeatureSpec(name=name, type="categorical", categories=sorted(self.text))


@dataclass
class Scan:
    """What the first pass found: schema, preprocessing, the capped held-out rows, and per chunk
    its number of training rows (every rank plans its steps from these)."""

    schema: Schema
    preprocessing: Preprocessing
    validation: Columns
    calibration: Columns
    train_rows_per_chunk: list[int]
    rows: dict[str, int]


def _take(columns: Columns, mask: np.ndarray, room: int) -> Columns | None:
    index = np.flatnonzero(mask)[:room]
    return {name: values[index] for name, values in columns.items()} if index.size else None


def _concat(parts: list[Columns], names: list[str]) -> Columns:
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


def scan(path: Path, options: ReadOptions, overrides: Schema | None) -> Scan:
    """The first streaming pass (see the module docstring)."""
    summaries: dict[str, ColumnSummary] = {}
    held: dict[int, list[Columns]] = {VALIDATION: [], CALIBRATION: []}
    held_rows = {VALIDATION: 0, CALIBRATION: 0}
    train_per_chunk: list[int] = []
    order: list[str] = []
    given = {f.name: f for f in overrides.features} if overrides else {}
    text_overrides = {name for name, f in given.items() if f.type == "categorical" and f.categories is None}
    for _, columns in read_chunks(path, options):
        codes = options.split(columns["__row__"])
        train = codes == TRAIN
        train_per_chunk.append(int(train.sum()))
        for name, values in columns.items():
            if name == "__row__":
                continue
            if name not in summaries:
                summaries[name] = ColumnSummary()
                order.append(name)
            summaries[name].add(name, values, train, name in text_overrides)
        for code in (VALIDATION, CALIBRATION):
            part = _take(columns, codes == code, HELD_OUT_CAP - held_rows[code])
            if part is not None:
                held[code].append(part)
                held_rows[code] += len(part["__row__"])
    if not order:
        raise DataError(f"{path}: no feature columns")
    unknown = sorted(set(given) - set(order))
    if unknown:
        raise SchemaError(f"schema names features that are not in the data: {', '.join(unknown)}")
    schema = Schema(features=[summaries[name].feature(name, given.get(name)) for name in order])
    numeric = {f.name: summaries[f.name].moments.stats() for f in schema.of_type("numeric")}
    n_train = sum(train_per_chunk)
    if n_train < 8 or held_rows[CALIBRATION] < 2 or held_rows[VALIDATION] < 1:
        raise DataError(f"{path}: too few normal rows to train, validate and calibrate (need about 50 or more)")
    return Scan(
        schema=schema,
        preprocessing=Preprocessing(numeric=numeric),
        validation=check_columns(schema, _concat(held[VALIDATION], order)),
        calibration=check_columns(schema, _concat(held[CALIBRATION], order)),
        train_rows_per_chunk=train_per_chunk,
        rows={"train": n_train, "validation": held_rows[VALIDATION], "calibration": held_rows[CALIBRATION]},
    )


class ChunkDataset(IterableDataset):
    """One epoch's training mini-batches of this rank (and loader worker), encoded on the CPU.

    Chunk i belongs to rank i mod world; within a rank, loader worker w takes every w-th of the
    rank's chunks. Rows of a chunk are shuffled with a generator seeded by (seed, epoch, chunk)."""

    def __init__(self, rows: StreamedRows, epoch: int, local_batch: int, world: World):
        self.rows, self.epoch, self.local_batch, self.world = rows, epoch, local_batch, world

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        size, rank = self.world.size, self.world.rank

        def mine(chunk: int) -> bool:  # this rank's chunks, then this worker's share of them
            return chunk % size == rank and (chunk // size) % workers == worker

        for chunk, columns in read_chunks(self.rows.path, self.rows.options, keep=mine):
            batch = self.rows.encode(columns)
            seed = (self.rows.options.seed * 1_000_003 + self.epoch) * 1_000_003 + chunk
            order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(batch), self.local_batch):
                yield batch.select(order[start : start + self.local_batch])


class StreamedRows:
    """The training rows of a file, streamed each epoch (a `training.rows.TrainRows`)."""

    def __init__(
        self, path: Path, options: ReadOptions, kind: TabularKind, found: Scan, device: torch.device, workers: int = 0
    ):
        self.path, self.options, self.kind = Path(path), options, kind
        self.per_chunk = found.train_rows_per_chunk
        self.device = device
        self.workers = workers

    def __len__(self) -> int:
        return sum(self.per_chunk)

    def encode(self, columns: Columns) -> Any:
        index = np.flatnonzero(self.options.split(columns["__row__"]) == TRAIN)
        rows = {name: values[index] for name, values in columns.items() if name != "__row__"}
        return self.kind.batch(check_columns(self.kind.schema, rows))

    def steps_per_epoch(self, local_batch: int, world: World) -> int:
        steps = [0] * world.size
        for chunk, n in enumerate(self.per_chunk):
            steps[chunk % world.size] += math.ceil(n / local_batch)
        return min(steps)

    def _loader(self, epoch: int, local_batch: int, world: World) -> DataLoader:
        dataset = ChunkDataset(self, epoch, local_batch, world)
        return DataLoader(dataset, batch_size=None, num_workers=self.workers)

    def epoch(self, epoch: int, local_batch: int, generator: torch.Generator, world: World) -> Iterator[Any]:
        steps = self.steps_per_epoch(local_batch, world)
        for step, batch in enumerate(self._loader(epoch, local_batch, world)):
            if step >= steps:
                break
            yield batch.to(self.device)

    def mean_objective(self, network: FamilyNetwork, noise: torch.Tensor, size: int, world: World) -> float:
        network.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for batch in self._loader(0, size, world):
                total += float(network.objective(batch.to(self.device), noise).sum())
                count += len(batch)
        total, count_all = world.sum(total, count)
        return total / max(count_all, 1)


def fit_stream(
    path: Path,
    config: TrainConfig,
    options: ReadOptions,
    schema_overrides: Schema | None = None,
    version: str | None = None,
    progress: bool = True,
    workers: int = 0,
) -> TrainResult:
    """Train a tabular detector on a file without loading it (see the module docstring)."""
    started = time.perf_counter()
    kind_options = config.kind_options_for("tabular")
    assert isinstance(kind_options, TabularOptions)
    if kind_options.condition_columns:
        raise SchemaError(
            "--condition-columns is not supported with --stream (the streaming scan does not keep a condition "
            "apart from the features yet): train the conditional model in memory, without --stream"
        )
    if schema_overrides is not None:
        options.text_columns = [f.name for f in schema_overrides.of_type("categorical")]
    options.seed = config.seed
    options.validation_fraction, options.calibration_fraction = held_out_fractions(count_rows(path, options), config)
    found = scan(path, options, schema_overrides)
    codec = TabularCodec(found.schema, found.preprocessing)
    kind = TabularKind(
        TabularKindConfig(
            schema=found.schema,
            preprocessing=found.preprocessing,
            network=tabular_network_config(codec, kind_options),
        )
    )
    world = World.from_environment(config.device)
    device = world.device(resolve_device(config.device))
    train = StreamedRows(path, options, kind, found, device, workers)
    logger.info("streaming %d training rows from %s in chunks of %d", len(train), path, options.chunk_rows)
    validation = kind.batch(found.validation).to(device)
    calibration = kind.batch(found.calibration).to(device)
    return fit_rows(kind, found.rows, train, validation, calibration, config, version, progress, started, world=world)
