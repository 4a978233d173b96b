"""The feature schema: names, types, whether a feature may be missing, and known categories.

A schema is inferred from training columns or read from JSON (`--schema schema.json`); either way it
is stored in the manifest and is the contract every scored record is checked against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vae_anomaly.model.errors import SchemaError

FeatureType = Literal["numeric", "categorical", "boolean"]

TRUE_STRINGS = frozenset({"true", "True", "TRUE"})
FALSE_STRINGS = frozenset({"false", "False", "FALSE"})


class FeatureSpec(BaseModel):
    """One input column."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: FeatureType
    required: bool = False
    categories: list[str] | None = None
    integer: bool = False

    @model_validator(mode="after")
    def _categories_match_type(self) -> FeatureSpec:
        if self.type == "categorical" and self.categories is not None and not self.categories:
            raise ValueError(f"feature {self.name!r}: a categorical feature needs at least one category")
        if self.type != "categorical" and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: only categorical features have categories")
        return self


class Schema(BaseModel):
    """An ordered list of features; the order is the column order of every tensor."""

    model_config = ConfigDict(extra="forbid")

    features: list[FeatureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Schema:
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"feature {feature.name!r} appears twice")
            seen.add(feature.name)
        return self

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def of_type(self, kind: FeatureType) -> list[FeatureSpec]:
        return [f for f in self.features if f.type == kind]


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def infer_feature(name: str, values: np.ndarray) -> FeatureSpec:
    """Infer one feature's type from a column (numeric dtype, bool dtype, or object of strings).

    Numeric dtypes stay numeric (0/1 integers too); a column of only true/false values, as booleans
    or as the strings true/false, is boolean; any other object column is categorical.
    """
    if values.dtype.kind in "iuf":
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        integer = bool(finite.size) and bool(np.all(np.equal(np.mod(finite, 1), 0)))
        return FeatureSpec(name=name, type="numeric", integer=integer)
    if values.dtype.kind == "b":
        return FeatureSpec(name=name, type="boolean")
    present = [v for v in values.tolist() if not _is_missing(v)]
    if present and all(
        isinstance(v, bool) or (isinstance(v, str) and v in TRUE_STRINGS | FALSE_STRINGS) for v in present
    ):
        return FeatureSpec(name=name, type="boolean")
    categories = sorted({str(v) for v in present})
    if not categories:
        raise SchemaError(f"feature {name!r} has no observed value: drop it or give its type in --schema")
    return FeatureSpec(name=name, type="categorical", categories=categories)


def infer_schema(columns: dict[str, np.ndarray], overrides: Schema | None = None) -> Schema:
    """Infer a schema from training columns; features named in `overrides` take its spec.

    A categorical override without categories gets them from the data.
    """
    given = {f.name: f for f in overrides.features} if overrides else {}
    unknown = sorted(set(given) - set(columns))
    if unknown:
        raise SchemaError(f"schema names features that are not in the data: {', '.join(unknown)}")
    features = []
    for name, values in columns.items():
        spec = given.get(name)
        if spec is None:
            features.append(infer_feature(name, values))
        elif spec.type == "categorical" and spec.categories is None:
            present = sorted({str(v) for v in values.tolist() if not _is_missing(v)})
            features.append(spec.model_copy(update={"categories": present}))
        else:
            features.append(spec)
    return Schema(features=features)


def read_schema(path: Path) -> Schema:
    """Read a schema file: `{"features": [{"name", "type", "required"?, "categories"?}, ...]}`."""
    try:
        return Schema.model_validate(json.loads(Path(path).read_text()))
    except FileNotFoundError as exc:
        raise SchemaError(f"{path}: schema file not found") from exc
    except (json.JSONDecodeError, ValidationError) as exc:
        raise SchemaError(f"{path}: not a valid schema: {exc}") from exc
