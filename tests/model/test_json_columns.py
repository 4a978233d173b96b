"""model.kinds.tabular.json_columns: the per-column path gives exactly what `records_to_columns` gives, columns or
issues, for valid and invalid input alike; the columnar table adds its own structural checks."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vae_anomaly.model.errors import InputError
from vae_anomaly.model.kinds.tabular.json_columns import json_records_to_columns, json_table_to_columns
from vae_anomaly.model.kinds.tabular.preprocessing import Columns, records_to_columns
from vae_anomaly.model.kinds.tabular.schema import Schema

GOOD = {"color": "green", "amount": 120.5, "flag": True, "count": 4}
ODD_VALUES = [None, "", "abc", 3, -0.0, 2.5, 1e308, -1e308, 1e307, 2**70, 10**400, True, False, [], {}, float("nan")]


@pytest.fixture(autouse=True)
def _per_column_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compare the per-column path itself, even for the few records these tests send (below
    `PER_COLUMN_FROM` the function takes the per-cell path on purpose)."""
    monkeypatch.setattr("vae_anomaly.model.kinds.tabular.json_columns.PER_COLUMN_FROM", 0)


def required(schema: Schema, *names: str) -> Schema:
    return Schema(features=[f.model_copy(update={"required": f.name in names}) for f in schema.features])


def outcome(convert, *args) -> tuple[str, object]:
    """('ok', columns as comparable lists) or ('error', the issues)."""
    try:
        columns: Columns = convert(*args)
    except InputError as exc:
        return "error", exc.issues
    return "ok", {name: (values.dtype.str, [repr(v) for v in values.tolist()]) for name, values in columns.items()}


def test_valid_records_give_identical_columns(small_schema: Schema):
    records = [GOOD, {"color": None, "amount": 3, "flag": False, "count": None}, {**GOOD, "amount": 2**70}]
    fast = outcome(json_records_to_columns, small_schema, records)
    assert fast[0] == "ok"
    assert fast == outcome(records_to_columns, small_schema, records)


@pytest.mark.parametrize("seed", range(30))
def test_random_odd_values_give_identical_outcomes(small_schema: Schema, seed: int):
    """Any mix of odd cells (wrong types, nulls, NaN, huge numbers) in any feature, required or not:
    the same columns, or the same issues in the same order with the same messages."""
    rng = random.Random(seed)
    schema = required(small_schema, *rng.sample(small_schema.names, rng.randint(0, 2)))
    records: list[object] = []
    for _ in range(rng.randint(1, 12)):
        record = dict(GOOD)
        for name in rng.sample(small_schema.names, rng.randint(0, 2)):
            record[name] = rng.choice(ODD_VALUES)
        if rng.random() < 0.05:
            record.pop("count")
        if rng.random() < 0.05:
            record["extra"] = 1
        records.append(record if rng.random() > 0.03 else [1, 2])
    fast = outcome(json_records_to_columns, schema, records)
    assert fast == outcome(records_to_columns, schema, records)


def test_bad_records_raise_the_per_cell_messages(small_schema: Schema):
    with pytest.raises(InputError) as info:
        json_records_to_columns(small_schema, [GOOD, {**GOOD, "amount": "x"}])
    (issue,) = info.value.issues
    assert (issue.loc, issue.msg, issue.type) == (
        ("records", 1, "amount"),
        "expected a number, got string 'x'",
        "float_type",
    )


# -- the columnar table ---------------------------------------------------------------------------


def as_table(records: list[dict[str, object]], names: list[str]) -> list[list[object]]:
    return [[record[name] for name in names] for record in records]


def test_table_gives_the_records_columns_in_any_column_order(small_schema: Schema):
    records = [GOOD, {"color": None, "amount": 3, "flag": False, "count": None}]
    names = ["count", "flag", "color", "amount"]
    table = outcome(json_table_to_columns, small_schema, names, as_table(records, names))
    assert table == outcome(records_to_columns, small_schema, records)


def test_table_cell_errors_use_the_record_messages_at_data_row_feature(small_schema: Schema):
    names = small_schema.names
    records = [GOOD, {**GOOD, "flag": "yes"}, {**GOOD, "amount": None, "color": 3}]
    with pytest.raises(InputError) as info:
        json_table_to_columns(required(small_schema, "amount"), names, as_table(records, names))
    got = [(i.loc, i.msg) for i in info.value.issues]
    assert got == [
        (("data", 1, "flag"), "expected true or false, got string 'yes'"),
        (("data", 2, "color"), "expected a category (a string), got number 3"),
        (("data", 2, "amount"), "feature is required and may not be null"),
    ]


def test_table_structure_errors(small_schema: Schema):
    with pytest.raises(InputError) as info:
        json_table_to_columns(small_schema, ["color", "amount", "amount", "other"], [[1, 2, 3, 4], [1]])
    got = {(i.loc, i.type) for i in info.value.issues}
    assert got == {
        (("columns", "amount"), "duplicate"),
        (("columns", "other"), "extra_forbidden"),
        (("columns", "flag"), "missing"),
        (("columns", "count"), "missing"),
        (("data", 1), "row_length"),
    }
    messages = {i.loc: i.msg for i in info.value.issues}
    assert messages[("data", 1)] == "expected 4 values (one per column), got 1"
    assert messages[("columns", "other")].startswith("unknown feature; the model expects color, amount")


def test_table_of_many_rows_is_float64_and_object(small_schema: Schema):
    names = small_schema.names
    rows = as_table([GOOD] * 1000, names)
    columns = json_table_to_columns(small_schema, names, rows)
    assert columns["amount"].dtype == np.float64 and columns["color"].dtype == object
    assert columns["flag"].tolist() == [1.0] * 1000
