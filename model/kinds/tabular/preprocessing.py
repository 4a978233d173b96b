"""Records and columns ⇄ tensors with observation masks, and back to original units.

Three representations meet here:
- records: JSON objects from a request, checked strictly (a string is never a number);
- columns: one numpy array per feature (numeric and boolean as float64 with NaN for missing,
  categorical as object arrays of str or None), what files are read into;
- `EncodedBatch`: the tensors the VAE consumes, with a mask of observed entries per feature type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from vae_anomaly.model.errors import InputError, InputIssue
from vae_anomaly.model.kinds.tabular.schema import FALSE_STRINGS, TRUE_STRINGS, FeatureSpec, Schema

Columns = dict[str, np.ndarray]

MAX_ISSUES = 100
"""Stop collecting input issues after this many: enough to fix a payload, bounded in size."""

MAX_STANDARDISED = 1e6
"""Standardised numeric values are clipped to ±this many standard deviations before scoring, so an
absurd but valid number (1e308) gets a huge, finite score instead of overflowing float32."""

MIN_SCALE = 1e-6
"""A numeric feature whose spread is below this (a constant column) is scaled by 1 instead."""


TAIL_KURTOSIS = 10.0
"""With `numeric_scaling="tails"`, a numeric feature whose training values have an excess kurtosis
above this (a Gaussian has 0, a Laplace 3, a Student-t with 5 degrees of freedom 6) is scaled by
`asinh`: a few rows 30 standard deviations out otherwise leave the bulk squeezed near 0, and the
decoder variance that fits the bulk gives those normal rows likelihoods of thousands of nats."""


class NumericStats(BaseModel):
    """Standardisation of one numeric feature: u = (x - center) / scale; then, for `transform`
    "asinh" (heavy-tailed features), x_std = (asinh(u) - t_center) / t_scale, else x_std = u.
    asinh is linear near 0, logarithmic far out and unbounded, so the order of values and the
    extremes stay extreme."""

    model_config = ConfigDict(extra="forbid")

    center: float
    scale: float
    transform: Literal["identity", "asinh"] = "identity"
    t_center: float = 0.0
    t_scale: float = 1.0


class Preprocessing(BaseModel):
    """Statistics fitted on training rows; stored in the manifest."""

    model_config = ConfigDict(extra="forbid")

    numeric: dict[str, NumericStats]


NumericScaling = Literal["standard", "tails"]


def fit_preprocessing(schema: Schema, columns: Columns, scaling: NumericScaling = "standard") -> Preprocessing:
    """Fit numeric standardisation on (normal) training columns, ignoring missing values;
    `scaling="tails"` scales heavy-tailed features by asinh (`TAIL_KURTOSIS`)."""
    stats = {}
    for feature in schema.of_type("numeric"):
        values = columns[feature.name]
        observed = values[~np.isnan(values)]
        if observed.size == 0:
            stats[feature.name] = NumericStats(center=0.0, scale=1.0)
            continue
        center = float(np.mean(observed))
        scale = float(np.std(observed))
        if scaling == "tails" and scale > MIN_SCALE and excess_kurtosis(observed, center, scale) > TAIL_KURTOSIS:
            stats[feature.name] = asinh_stats(observed, scale)
            continue
        stats[feature.name] = NumericStats(center=center, scale=scale if scale > MIN_SCALE else 1.0)
    return Preprocessing(numeric=stats)


def excess_kurtosis(values: np.ndarray, mean: float, std: float) -> float:
    """Fourth standardised moment minus 3 (0 for a Gaussian)."""
    return float(np.mean(((values - mean) / std) ** 4) - 3.0)


def asinh_stats(observed: np.ndarray, std: float) -> NumericStats:
    """Centre at the median, scale by the robust spread (IQR / 1.349, the standard deviation of a
    Gaussian core; the standard deviation where most values are equal), asinh, then standardise."""
    center = float(np.median(observed))
    q75, q25 = np.percentile(observed, [75, 25])
    scale = float(q75 - q25) / 1.349
    if scale <= MIN_SCALE:
        scale = std
    transformed = np.arcsinh((observed - center) / scale)
    t_scale = float(np.std(transformed))
    return NumericStats(
        center=center,
        scale=scale,
        transform="asinh",
        t_center=float(np.mean(transformed)),
        t_scale=t_scale if t_scale > MIN_SCALE else 1.0,
    )


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _IssueCollector:
    """Gathers `InputIssue`s up to `MAX_ISSUES` and raises them together."""

    def __init__(self) -> None:
        self.issues: list[InputIssue] = []

    def add(self, loc: tuple[str | int, ...], msg: str, kind: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(InputIssue(loc=loc, msg=msg, type=kind))

    @property
    def full(self) -> bool:
        return len(self.issues) >= MAX_ISSUES

    def raise_if_any(self) -> None:
        if self.issues:
            raise InputError(self.issues)


def _check_cell(feature: FeatureSpec, value: object, loc: tuple[str | int, ...], issues: _IssueCollector):
    """Check one JSON value strictly against its feature; return the column value or None."""
    if value is None:
        if feature.required:
            issues.add(loc, "feature is required and may not be null", "missing_required")
        return None
    if feature.type == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            issues.add(loc, f"expected a number, got {_describe(value)}", "float_type")
            return None
        try:
            number = float(value)  # every finite float64, up to 1.797e308
        except OverflowError:  # an integer beyond float64's range
            number = math.inf
        if not math.isfinite(number):
            issues.add(loc, f"expected a finite number, got {value!r}", "finite_number")
            return None
        return number
    if feature.type == "categorical":
        if not isinstance(value, str):
            issues.add(loc, f"expected a category (a string), got {_describe(value)}", "string_type")
            return None
        return value
    if not isinstance(value, bool):
        issues.add(loc, f"expected true or false, got {_describe(value)}", "bool_type")
        return None
    return 1.0 if value else 0.0


def _empty_columns(schema: Schema, n: int) -> Columns:
    """One all-missing column per feature (NaN, or None for categories), schema order.

    The float columns are the rows of one block rather than one array each: a single-record request
    spent about 60% of its cell checks allocating 21 one-element arrays (issue 15). Each row is a
    contiguous array of its own; no two columns share an element."""
    block = np.empty((len(schema.features), n), dtype=np.float64)
    block.fill(np.nan)
    return {
        feature.name: np.full(n, None, dtype=object) if feature.type == "categorical" else row
        for feature, row in zip(schema.features, block, strict=True)
    }


def records_to_columns(schema: Schema, records: Sequence[object], loc_prefix: str = "records") -> Columns:
    """Check JSON records against the schema and gather them into columns.

    Every feature key must be present (null for missing); unknown keys, wrong types and null in a
    required feature are errors. Raises `InputError` listing every issue (up to `MAX_ISSUES`), each
    located as (loc_prefix, record index, feature).
    """
    issues = _IssueCollector()
    names = schema.names
    known = set(names)
    columns = _empty_columns(schema, len(records))
    for i, record in enumerate(records):
        if issues.full:
            break
        if not isinstance(record, Mapping):
            issues.add((loc_prefix, i), f"expected an object of features, got {_describe(record)}", "dict_type")
            continue
        if len(record) != len(names) or not known.issuperset(record):
            for key in record:
                if key not in known:
                    issues.add(
                        (loc_prefix, i, str(key)),
                        f"unknown feature; the model expects {', '.join(names[:20])}"
                        + (" ..." if len(names) > 20 else ""),
                        "extra_forbidden",
                    )
            for name in names:
                if name not in record:
                    issues.add((loc_prefix, i, name), "feature is absent; send null for a missing value", "missing")
        for feature in schema.features:
            if feature.name in record:
                value = _check_cell(feature, record[feature.name], (loc_prefix, i, feature.name), issues)
                if value is not None:
                    columns[feature.name][i] = value
    issues.raise_if_any()
    return columns


def _file_value(feature: FeatureSpec, value: object, loc: tuple[str | int, ...], issues: _IssueCollector):
    """Check one cell read from a file: looser than JSON (numbers may come as text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        if feature.required:
            issues.add(loc, "feature is required and may not be missing", "missing_required")
        return None
    if feature.type == "numeric":
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            issues.add(loc, f"expected a number, got {_describe(value)}", "float_type")
            return None
        if not math.isfinite(number):
            issues.add(loc, f"expected a finite number, got {value!r}", "finite_number")
            return None
        return number
    if feature.type == "categorical":
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if isinstance(value, str) and value in TRUE_STRINGS | FALSE_STRINGS:
        return 1.0 if value in TRUE_STRINGS else 0.0
    if isinstance(value, (int, float, np.number)) and float(value) in (0.0, 1.0):
        return float(value)
    issues.add(loc, f"expected true or false, got {_describe(value)}", "bool_type")
    return None


def check_columns(schema: Schema, columns: Mapping[str, np.ndarray], loc_prefix: str = "row") -> Columns:
    """Bring columns read from a file to the canonical dtypes, checking every cell.

    Extra columns are ignored (a file may carry ids or labels); an absent feature column is an error.
    Numeric columns that are already finite floats take a vectorised path.
    """
    issues = _IssueCollector()
    absent = [name for name in schema.names if name not in columns]
    if absent:
        raise InputError(
            [InputIssue(("columns", name), "column is absent from the data", "missing") for name in absent]
        )
    out: Columns = {}
    for feature in schema.features:
        values = np.asarray(columns[feature.name])
        if feature.type == "numeric" and values.dtype.kind in "iufb":
            values = values.astype(np.float64)
            bad = np.isinf(values)
            if feature.required:
                bad |= np.isnan(values)
            for row in np.flatnonzero(bad)[:MAX_ISSUES]:
                _file_value(feature, values[row], (loc_prefix, int(row), feature.name), issues)
            out[feature.name] = np.where(bad, np.nan, values)
            continue
        column = _empty_columns(Schema(features=[feature]), len(values))[feature.name]
        for row, value in enumerate(values.tolist()):
            checked = _file_value(feature, value, (loc_prefix, row, feature.name), issues)
            if checked is not None:
                column[row] = checked
        out[feature.name] = column
    issues.raise_if_any()
    return out


@dataclass
class EncodedBatch:
    """Tensors for B records. Missing entries are 0 in the value tensors and False in the masks.

    x_in (B, D_in): encoder input = standardised numerics, one-hot categories, booleans, then one
    observed-indicator per feature (so the encoder can tell a missing value from a zero).
    """

    x_in: torch.Tensor
    numeric: torch.Tensor  # (B, n_numeric) standardised
    numeric_mask: torch.Tensor  # (B, n_numeric) bool
    categories: torch.Tensor  # (B, n_categorical) long index; -1 where missing or unseen
    categorical_mask: torch.Tensor  # (B, n_categorical) bool, True for unseen categories too
    unseen: torch.Tensor  # (B, n_categorical) bool, a category absent from training
    boolean: torch.Tensor  # (B, n_boolean) 0/1
    boolean_mask: torch.Tensor  # (B, n_boolean) bool
    condition: torch.Tensor | None = None  # (B, C) one-hot condition of a conditional model (`model.conditions`)

    def __len__(self) -> int:
        return self.x_in.shape[0]

    def _map(self, apply: Callable[[torch.Tensor], torch.Tensor]) -> EncodedBatch:
        fields: dict[str, Any] = {k: v if v is None else apply(v) for k, v in self.__dict__.items()}
        return EncodedBatch(**fields)

    def to(self, device: torch.device | str) -> EncodedBatch:
        return self._map(lambda v: v.to(device))

    def slice(self, start: int, stop: int) -> EncodedBatch:
        return self._map(lambda v: v[start:stop])

    def select(self, index: torch.Tensor) -> EncodedBatch:
        return self._map(lambda v: v[index])


class TabularCodec:
    """Encodes checked columns into an `EncodedBatch` and decodes model outputs to original units."""

    def __init__(self, schema: Schema, preprocessing: Preprocessing):
        self.schema = schema
        self.preprocessing = preprocessing
        self.numeric = schema.of_type("numeric")
        self.categorical = schema.of_type("categorical")
        self.boolean = schema.of_type("boolean")
        self.category_sizes = [len(f.categories or []) for f in self.categorical]
        self.category_index = [{c: i for i, c in enumerate(f.categories or [])} for f in self.categorical]
        order = {f.name: i for i, f in enumerate(schema.features)}
        # Positions in schema order of each type block: per-feature results are scattered with these.
        self.numeric_positions = [order[f.name] for f in self.numeric]
        self.categorical_positions = [order[f.name] for f in self.categorical]
        self.boolean_positions = [order[f.name] for f in self.boolean]
        self.center = np.array([preprocessing.numeric[f.name].center for f in self.numeric], dtype=np.float64)
        self.scale = np.array([preprocessing.numeric[f.name].scale for f in self.numeric], dtype=np.float64)
        numeric_stats = [preprocessing.numeric[f.name] for f in self.numeric]
        self.asinh = np.array([stats.transform == "asinh" for stats in numeric_stats], dtype=bool)
        self.t_center = np.array([stats.t_center for stats in numeric_stats], dtype=np.float64)
        self.t_scale = np.array([stats.t_scale for stats in numeric_stats], dtype=np.float64)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """(B, n_numeric) original values → model units (`NumericStats`), clipped to ±`MAX_STANDARDISED`."""
        with np.errstate(invalid="ignore"):
            u = (raw - self.center) / self.scale
            if self.asinh.any():
                u = np.where(self.asinh, (np.arcsinh(u) - self.t_center) / self.t_scale, u)
        return np.clip(u, -MAX_STANDARDISED, MAX_STANDARDISED)

    @property
    def input_dim(self) -> int:
        return len(self.numeric) + sum(self.category_sizes) + len(self.boolean) + len(self.schema.features)

    def input_feature_index(self) -> np.ndarray:
        """(D_in,) the schema position of the feature behind each column of `x_in`.

        Hiding feature f from the encoder (denoising training) zeroes every column mapped to f.
        """
        owners = list(self.numeric_positions)
        for position, size in zip(self.categorical_positions, self.category_sizes, strict=True):
            owners += [position] * size
        owners += self.boolean_positions
        owners += list(range(len(self.schema.features)))
        return np.array(owners, dtype=np.int64)

    def missing(self, columns: Columns) -> np.ndarray:
        """(B, F) bool: True where a feature is missing, in schema order."""
        blocks = []
        for feature in self.schema.features:
            values = columns[feature.name]
            if feature.type == "categorical":
                blocks.append(np.array([v is None for v in values.tolist()], dtype=bool))
            else:
                blocks.append(np.isnan(values))
        return np.stack(blocks, axis=1)

    def encode(self, columns: Columns) -> EncodedBatch:
        """Checked columns (see `check_columns` / `records_to_columns`) → tensors on the CPU."""
        n = len(next(iter(columns.values())))
        if self.numeric:
            raw = np.stack([columns[f.name] for f in self.numeric], axis=1)
            numeric_mask = ~np.isnan(raw)
            standardised = self.standardise(raw)
            numeric = np.where(numeric_mask, standardised, 0.0)
        else:
            numeric_mask = np.zeros((n, 0), dtype=bool)
            numeric = np.zeros((n, 0))
        categories = np.full((n, len(self.categorical)), -1, dtype=np.int64)
        categorical_mask = np.zeros((n, len(self.categorical)), dtype=bool)
        unseen = np.zeros((n, len(self.categorical)), dtype=bool)
        one_hot = np.zeros((n, sum(self.category_sizes)), dtype=np.float32)
        offset = 0
        for j, (feature, index) in enumerate(zip(self.categorical, self.category_index, strict=True)):
            for row, value in enumerate(columns[feature.name].tolist()):
                if value is None:
                    continue
                categorical_mask[row, j] = True
                position = index.get(value)
                if position is None:
                    unseen[row, j] = True
                else:
                    categories[row, j] = position
                    one_hot[row, offset + position] = 1.0
            offset += self.category_sizes[j]
        if self.boolean:
            raw_bool = np.stack([columns[f.name] for f in self.boolean], axis=1)
            boolean_mask = ~np.isnan(raw_bool)
            boolean = np.where(boolean_mask, raw_bool, 0.0)
        else:
            boolean_mask = np.zeros((n, 0), dtype=bool)
            boolean = np.zeros((n, 0))
        observed = np.empty((n, len(self.schema.features)), dtype=np.float32)
        observed[:, self.numeric_positions] = numeric_mask
        observed[:, self.categorical_positions] = categorical_mask
        observed[:, self.boolean_positions] = boolean_mask
        # A missing entry enters the encoder as 0 with its indicator at 0, whatever its type.
        x_in = np.concatenate([numeric, one_hot, boolean, observed], axis=1).astype(np.float32)
        return EncodedBatch(
            x_in=torch.from_numpy(x_in),
            numeric=torch.from_numpy(numeric.astype(np.float32)),
            numeric_mask=torch.from_numpy(numeric_mask),
            categories=torch.from_numpy(categories),
            categorical_mask=torch.from_numpy(categorical_mask),
            unseen=torch.from_numpy(unseen),
            boolean=torch.from_numpy(boolean.astype(np.float32)),
            boolean_mask=torch.from_numpy(boolean_mask),
        )

    def to_original(self, numeric_std: np.ndarray) -> np.ndarray:
        """(B, n_numeric) standardised values → original units, rounded for integer features."""
        values = numeric_std.astype(np.float64)
        if self.asinh.any():
            with np.errstate(over="ignore"):
                values = np.where(self.asinh, np.sinh(values * self.t_scale + self.t_center), values)
        values = values * self.scale + self.center
        for j, feature in enumerate(self.numeric):
            if feature.integer:
                values[:, j] = np.round(values[:, j])
        return values

    def decode_records(
        self, numeric_std: np.ndarray, category_index: np.ndarray, boolean_value: np.ndarray
    ) -> list[dict[str, object]]:
        """Model-space values → records in original units and category names, schema order.

        numeric_std (B, n_numeric), category_index (B, n_categorical) ints, boolean_value (B, n_boolean) 0/1.
        """
        columns = self.decode_columns(numeric_std, category_index, boolean_value)
        n = numeric_std.shape[0]
        return [{name: columns[name][i] for name in self.schema.names} for i in range(n)]

    def decode_columns(
        self, numeric_std: np.ndarray, category_index: np.ndarray, boolean_value: np.ndarray
    ) -> dict[str, list[object]]:
        """As `decode_records`, one list of JSON-ready values per feature: cheaper when a caller
        needs a few cells of each record (the top features) rather than whole records."""
        numeric = self.to_original(numeric_std)
        columns: dict[str, list[object]] = {}
        for j, feature in enumerate(self.numeric):
            values = numeric[:, j]
            columns[feature.name] = [int(v) for v in values] if feature.integer else values.tolist()
        for j, feature in enumerate(self.categorical):
            names = feature.categories or []
            columns[feature.name] = [names[i] for i in category_index[:, j].tolist()]
        for j, feature in enumerate(self.boolean):
            columns[feature.name] = [bool(v) for v in boolean_value[:, j].tolist()]
        return columns
