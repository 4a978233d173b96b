"""Conditions: the context c that a conditional family (the CVAE) models x given.

A condition is one or more discrete variables (tabular: the `--condition-columns`; images: the
label). Every kind that carries conditions describes them with one `ConditionSpec`, stored in its
manifest section, and puts their one-hot encoding on its batch as `condition` (B, C). A condition is
an *input*: it is checked and encoded, never scored, so it appears in no likelihood and no
explanation. This module is kind-agnostic: kinds use it for their records, files and labels, the
detector for the `condition` of `/sample`.

Values are compared in a canonical text form (`canonical_value`), so a context read from a CSV as
the number 2, sent in JSON as 2 or as "2", is the same context; a column that was numeric in
training gives numbers back in samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vae_anomaly.model.errors import InputError, InputIssue

Loc = tuple[str | int, ...]

MAX_CONDITION_VALUES = 256
"""Most distinct values one condition variable may take: a condition is a context (a segment, a
machine, a label), one-hot encoded; a column with thousands of values is a feature, not a context."""


def canonical_value(value: object) -> str | None:
    """The text a condition value is compared by; None for a missing one (None, NaN, "").

    Integral numbers lose their '.0' (2, 2.0 and "2" are one value); booleans are "true"/"false".
    """
    if value is None or value == "":
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    if isinstance(value, str):
        return value
    return None  # arrays and objects are no condition values; the caller names the issue


def _describe(value: object) -> str:
    shown = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return shown if len(shown) <= 40 else shown[:37] + "..."


class ConditionVariable(BaseModel):
    """One discrete condition: its name (a column, or "label") and the values seen in training."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    values: list[str] = Field(min_length=1, max_length=MAX_CONDITION_VALUES)
    numeric: bool = Field(default=False, description="the training column was numeric: samples carry numbers")

    def index(self, value: object) -> int | None:
        """The position of `value` among `values`, or None when it is unknown or missing."""
        text = canonical_value(value)
        try:
            return self.values.index(text) if text is not None else None
        except ValueError:
            return None

    def output(self, position: int) -> object:
        """The value at `position` as JSON: a number where the training column was numeric."""
        text = self.values[position]
        if not self.numeric:
            return text
        number = float(text)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number

    def known(self) -> str:
        shown = ", ".join(repr(v) for v in self.values[:20])
        return shown + (" ..." if len(self.values) > 20 else "")


class ConditionSpec(BaseModel):
    """The condition variables of a conditional model, in encoding order."""

    model_config = ConfigDict(extra="forbid")

    variables: list[ConditionVariable] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ConditionSpec:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"condition variables must have distinct names, got {names}")
        return self

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def width(self) -> int:
        """C, the width of the one-hot encoding."""
        return sum(len(v.values) for v in self.variables)

    def one_hot(self, index: np.ndarray) -> torch.Tensor:
        """Value positions (B, V) int → (B, C) float32, one block of one-hot columns per variable."""
        blocks = []
        for j, variable in enumerate(self.variables):
            block = torch.zeros((index.shape[0], len(variable.values)))
            block[torch.arange(index.shape[0]), torch.from_numpy(index[:, j].astype(np.int64))] = 1.0
            blocks.append(block)
        return torch.cat(blocks, dim=1)

    def outputs(self, index: np.ndarray) -> list[dict[str, object]]:
        """Value positions (B, V) → one {name: value} per row, values as JSON (see `output`)."""
        return [
            {v.name: v.output(int(index[i, j])) for j, v in enumerate(self.variables)} for i in range(index.shape[0])
        ]

    def column_index(
        self, name: str, values: Sequence[object], loc: Loc, name_in_loc: bool = True
    ) -> tuple[np.ndarray, list[InputIssue]]:
        """One variable's values (a column) → positions (B,), and an issue per unknown or missing
        value located at (*loc, row, name), or (*loc, row) without `name_in_loc`."""
        variable = self.variables[self.names.index(name)]
        positions = np.zeros(len(values), dtype=np.int64)
        issues = []
        for row, value in enumerate(values):
            position = variable.index(value)
            if position is None:
                issues.append(_value_issue(variable, value, (*loc, row, name) if name_in_loc else (*loc, row)))
            else:
                positions[row] = position
        return positions, issues

    def example(self) -> dict[str, object]:
        """A condition this model takes: each variable's first training value ({"segment": "a"})."""
        return {variable.name: variable.output(0) for variable in self.variables}

    def sample_index(self, value: object, n: int, loc: Loc = ("condition",)) -> np.ndarray:
        """The `condition` of a sample request → positions (n, V), the same for every draw.

        An object names every variable ({"segment": "b"}); a model with one variable also takes
        the bare value ("b", or a label 3). Raises `InputError` naming the missing variable, the
        unknown key or the unknown value, and the values that are known.
        """
        if value is None:
            example = ", ".join(f"{json.dumps(v.name)}: {json.dumps(v.output(0))}" for v in self.variables)
            raise InputError(
                [InputIssue(loc, f"this model is conditional: give the condition, e.g. {{{example}}}", "missing")]
            )
        if not isinstance(value, Mapping):
            if len(self.variables) != 1:
                msg = f"give an object naming each condition variable ({', '.join(self.names)}), got {_describe(value)}"
                raise InputError([InputIssue(loc, msg, "dict_type")])
            value = {self.variables[0].name: value}
        issues = [
            InputIssue(
                (*loc, str(key)), f"unknown condition variable; the model's are {', '.join(self.names)}", "extra"
            )
            for key in value
            if key not in self.names
        ]
        positions = np.zeros((n, len(self.variables)), dtype=np.int64)
        for j, variable in enumerate(self.variables):
            if variable.name not in value:
                msg = f"condition variable is absent; give one of {variable.known()}"
                issues.append(InputIssue((*loc, variable.name), msg, "missing"))
                continue
            position = variable.index(value[variable.name])
            if position is None:
                issues.append(_value_issue(variable, value[variable.name], (*loc, variable.name)))
            else:
                positions[:, j] = position
        if issues:
            raise InputError(issues)
        return positions

    def index_of(self, one_hot: np.ndarray) -> np.ndarray:
        """A one-hot encoding (B, C) → value positions (B, V), the inverse of `one_hot` (the
        largest entry of each variable's block where the rows are mixtures)."""
        starts = np.cumsum([0, *(len(v.values) for v in self.variables)])
        return np.stack(
            [one_hot[:, starts[j] : starts[j + 1]].argmax(axis=1) for j in range(len(self.variables))], axis=1
        ).astype(np.int64)

    def first_index(self, n: int) -> np.ndarray:
        """(n, V) positions cycling through each variable's values: conditions for warm-up inputs."""
        return np.stack([np.arange(n) % len(v.values) for v in self.variables], axis=1).astype(np.int64)


def _value_issue(variable: ConditionVariable, value: object, loc: Loc) -> InputIssue:
    if canonical_value(value) is None:
        return InputIssue(loc, f"the condition may not be missing; give one of {variable.known()}", "missing_required")
    return InputIssue(
        loc, f"unknown condition value {_describe(value)}; the model knows {variable.known()}", "condition_value"
    )


def fit_condition_spec(columns: Mapping[str, np.ndarray], names: Sequence[str]) -> ConditionSpec:
    """The condition variables of training data: each named column's distinct values, sorted.

    Raises `ValueError` naming the column when it is absent, has missing values or too many values.
    """
    variables = []
    for name in names:
        if name not in columns:
            raise ValueError(f"condition column {name!r} is not in the data")
        values = np.asarray(columns[name])
        texts = [canonical_value(v) for v in values.tolist()]
        if any(t is None for t in texts):
            raise ValueError(f"condition column {name!r} has missing values; drop those rows or fill them")
        distinct = sorted(set(texts), key=lambda t: (_number_key(t), t))  # type: ignore[arg-type]
        if len(distinct) > MAX_CONDITION_VALUES:
            raise ValueError(
                f"condition column {name!r} has {len(distinct)} distinct values (at most {MAX_CONDITION_VALUES}): "
                "a condition is a context such as a segment or a machine, not a continuous feature"
            )
        variables.append(
            ConditionVariable(name=name, values=distinct, numeric=values.dtype.kind in "iuf")  # type: ignore[arg-type]
        )
    return ConditionSpec(variables=variables)


def _number_key(text: str) -> float:
    """Numeric values sort by number (2 before 10); text sorts after every number."""
    try:
        return float(text)
    except ValueError:
        return math.inf
