"""Condition columns of tabular models (`--condition-columns`): taken out of records, columnar
bodies and files before the feature schema checks the rest, and checked against the model's
`ConditionSpec` (absent column, missing or unknown value → an issue naming the record and column).

The checked inputs of a conditional model are the feature columns plus one int64 column of value
positions per condition column, under the condition's name (`Columns` is a dict of arrays either
way): concatenation and slicing treat both alike, and only the batch encoder and the renderers look
at the condition columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from vae_anomaly.model.conditions import ConditionSpec
from vae_anomaly.model.errors import InputError, InputIssue
from vae_anomaly.model.kinds.tabular.preprocessing import MAX_ISSUES, Columns

Parse = Callable[[], Columns]


def _checked(parse: Parse, issues: list[InputIssue]) -> Columns:
    """Run the feature check, raising its issues together with the condition's."""
    try:
        columns = parse()
    except InputError as exc:
        raise InputError((issues + exc.issues)[:MAX_ISSUES]) from None
    if issues:
        raise InputError(issues[:MAX_ISSUES])
    return columns


def absent_message(spec: ConditionSpec, name: str) -> str:
    known = spec.variables[spec.names.index(name)].known()
    return f"condition column is absent; this conditional model needs it in every input (one of {known})"


def split_records(
    spec: ConditionSpec, records: Sequence[object], features: Callable[[Sequence[object]], Columns], loc: str
) -> Columns:
    """Records with condition keys → feature columns (checked by `features`) plus condition columns."""
    names = spec.names
    issues: list[InputIssue] = []
    values: dict[str, list[object]] = {name: [] for name in names}
    stripped: list[object] = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):  # the feature check names it
            stripped.append(record)
            for name in names:
                values[name].append(spec.variables[names.index(name)].values[0])
            continue
        for name in names:
            if name not in record:
                issues.append(InputIssue((loc, i, name), absent_message(spec, name), "missing"))
                values[name].append(spec.variables[names.index(name)].values[0])
            else:
                values[name].append(record[name])
        stripped.append({key: value for key, value in record.items() if key not in values})
    condition = _condition_columns(spec, values, (loc,), issues)
    return {**_checked(lambda: features(stripped), issues), **condition}


def split_table(
    spec: ConditionSpec,
    names: Sequence[str],
    rows: Sequence[Sequence[object]],
    features: Callable[[Sequence[str], Sequence[Sequence[object]]], Columns],
) -> Columns:
    """A columnar body (names, rows) with condition columns → feature and condition columns."""
    issues = [
        InputIssue(("columns", name), absent_message(spec, name), "missing") for name in spec.names if name not in names
    ]
    width = len(names)
    bad_rows = [i for i, row in enumerate(rows) if len(row) != width]
    if issues or bad_rows:
        issues += [
            InputIssue(("data", i), f"expected {width} values (one per column), got {len(rows[i])}", "row_length")
            for i in bad_rows
        ]
        raise InputError(issues[:MAX_ISSUES])
    position = {name: names.index(name) for name in spec.names}
    keep = [j for j, name in enumerate(names) if name not in position]
    values = {name: [row[j] for row in rows] for name, j in position.items()}
    condition = _condition_columns(spec, values, ("data",), issues)
    feature_names = [names[j] for j in keep]
    feature_rows = [[row[j] for j in keep] for row in rows]
    return {**_checked(lambda: features(feature_names, feature_rows), issues), **condition}


def split_file_columns(
    spec: ConditionSpec, columns: Mapping[str, np.ndarray], features: Callable[[Mapping[str, np.ndarray]], Columns]
) -> Columns:
    """Columns read from a file (extra columns allowed) → feature and condition columns."""
    absent = [name for name in spec.names if name not in columns]
    if absent:
        raise InputError(
            [InputIssue(("columns", name), "condition column is absent from the data", "missing") for name in absent]
        )
    issues: list[InputIssue] = []
    values = {name: np.asarray(columns[name]).tolist() for name in spec.names}
    condition = _condition_columns(spec, values, ("row",), issues)
    return {**_checked(lambda: features(columns), issues), **condition}


def _condition_columns(
    spec: ConditionSpec, values: Mapping[str, Sequence[object]], loc: tuple[str, ...], issues: list[InputIssue]
) -> Columns:
    out: Columns = {}
    for name in spec.names:
        positions, found = spec.column_index(name, values[name], loc)
        issues.extend(found)
        out[name] = positions
    return out


def condition_index(spec: ConditionSpec, columns: Columns) -> np.ndarray:
    """(B, V) value positions of checked columns."""
    return np.stack([columns[name] for name in spec.names], axis=1)
