"""model.kinds.tabular.schema: type inference from columns, overrides, validation and schema files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from vae_anomaly.model.errors import SchemaError
from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema, infer_feature, infer_schema, read_schema


def test_float_column_is_numeric_not_integer():
    spec = infer_feature("amount", np.array([1.5, 2.0, np.nan]))
    assert (spec.type, spec.integer, spec.categories) == ("numeric", False, None)


def test_integer_column_is_numeric_integer():
    assert infer_feature("items", np.array([1, 5, 3])) == FeatureSpec(name="items", type="numeric", integer=True)
    # Whole floats with gaps (an int column with NaN read by pandas) are integers too.
    assert infer_feature("items", np.array([1.0, np.nan, 4.0])).integer is True


def test_zero_one_integers_stay_numeric():
    spec = infer_feature("clicked", np.array([0, 1, 1, 0]))
    assert spec.type == "numeric"
    assert spec.integer is True


def test_all_missing_float_column_is_numeric_without_integer_flag():
    spec = infer_feature("empty", np.array([np.nan, np.nan]))
    assert (spec.type, spec.integer) == ("numeric", False)


@pytest.mark.parametrize(
    "values",
    [
        np.array([True, False, True]),
        np.array(["true", "false", None], dtype=object),
        np.array(["True", "FALSE", np.nan], dtype=object),
        np.array([True, None, False], dtype=object),
        np.array([True, "false"], dtype=object),
    ],
    ids=["bool-dtype", "lower-strings", "mixed-case-strings-with-nan", "bool-objects-with-none", "bool-and-string"],
)
def test_booleans_and_true_false_strings_are_boolean(values: np.ndarray):
    assert infer_feature("flag", values) == FeatureSpec(name="flag", type="boolean")


def test_strings_are_categorical_with_sorted_categories_without_missing():
    spec = infer_feature("color", np.array(["red", "blue", None, "red", np.nan], dtype=object))
    assert spec.type == "categorical"
    assert spec.categories == ["blue", "red"]
    assert spec.integer is False


def test_true_false_mixed_with_other_strings_is_categorical():
    spec = infer_feature("answer", np.array(["true", "false", "maybe"], dtype=object))
    assert spec.type == "categorical"
    assert spec.categories == ["false", "maybe", "true"]


def test_column_without_any_value_is_an_error_naming_it():
    with pytest.raises(SchemaError, match=r"feature 'ghost' has no observed value.*--schema"):
        infer_feature("ghost", np.array([None, None], dtype=object))


def test_infer_schema_keeps_column_order_and_types():
    columns = {
        "z_amount": np.array([1.5, 2.5]),
        "a_color": np.array(["x", "y"], dtype=object),
        "m_flag": np.array([True, False]),
    }
    schema = infer_schema(columns)
    assert schema.names == ["z_amount", "a_color", "m_flag"]
    assert [f.type for f in schema.features] == ["numeric", "categorical", "boolean"]
    assert [f.name for f in schema.of_type("categorical")] == ["a_color"]


def test_overrides_replace_inferred_specs_and_keep_required():
    columns = {
        "code": np.array([7, 12, 7]),  # would be numeric
        "amount": np.array([1.0, 2.0, 3.0]),
        "flag": np.array([0, 1, 1]),  # would be numeric
        "color": np.array(["a", "b", "a"], dtype=object),
    }
    overrides = Schema(
        features=[
            FeatureSpec(name="code", type="categorical"),
            FeatureSpec(name="amount", type="numeric", required=True),
            FeatureSpec(name="flag", type="boolean"),
            FeatureSpec(name="color", type="categorical", categories=["a", "b", "c"]),
        ]
    )
    schema = infer_schema(columns, overrides)
    by_name = {f.name: f for f in schema.features}
    # A categorical override without categories takes them from the data, as text.
    assert by_name["code"].type == "categorical"
    assert by_name["code"].categories == ["12", "7"]
    assert by_name["amount"].required is True
    assert by_name["flag"].type == "boolean"
    # Given categories win over the observed ones (a category may be legal yet unseen).
    assert by_name["color"].categories == ["a", "b", "c"]
    assert schema.names == list(columns)  # data order, not override order


def test_partial_overrides_leave_other_features_inferred():
    columns = {"a": np.array([1.0, 2.0]), "b": np.array(["x", "y"], dtype=object)}
    schema = infer_schema(columns, Schema(features=[FeatureSpec(name="a", type="numeric", required=True)]))
    assert schema.features[0].required is True
    assert schema.features[1] == FeatureSpec(name="b", type="categorical", categories=["x", "y"])
    assert schema.features[1].required is False


def test_overrides_naming_absent_features_are_an_error():
    columns = {"a": np.array([1.0])}
    overrides = Schema(features=[FeatureSpec(name="zeta", type="numeric"), FeatureSpec(name="beta", type="boolean")])
    with pytest.raises(SchemaError, match="schema names features that are not in the data: beta, zeta"):
        infer_schema(columns, overrides)


def test_schema_rejects_duplicate_names():
    with pytest.raises(ValidationError, match="feature 'a' appears twice"):
        Schema(features=[FeatureSpec(name="a", type="numeric"), FeatureSpec(name="a", type="boolean")])


def test_schema_rejects_categories_on_other_types_and_empty_categories():
    with pytest.raises(ValidationError, match="feature 'n': only categorical features have categories"):
        FeatureSpec(name="n", type="numeric", categories=["x"])
    with pytest.raises(ValidationError, match="feature 'c': a categorical feature needs at least one category"):
        FeatureSpec(name="c", type="categorical", categories=[])
    with pytest.raises(ValidationError):
        Schema(features=[])


def test_read_schema_reads_a_valid_file(tmp_path: Path):
    path = tmp_path / "schema.json"
    path.write_text(
        json.dumps(
            {"features": [{"name": "a", "type": "numeric", "required": True}, {"name": "c", "type": "categorical"}]}
        )
    )
    schema = read_schema(path)
    assert schema.names == ["a", "c"]
    assert schema.features[0].required is True
    assert schema.features[1].categories is None


def test_read_schema_missing_file_names_it(tmp_path: Path):
    path = tmp_path / "nope.json"
    with pytest.raises(SchemaError, match="schema file not found") as info:
        read_schema(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"features": [{"name": "a", "type": "text"}]}),
        json.dumps({"features": [{"name": "a", "type": "numeric", "colour": "red"}]}),
        json.dumps([{"name": "a", "type": "numeric"}]),
    ],
    ids=["bad-json", "unknown-type", "unknown-field", "not-an-object"],
)
def test_read_schema_invalid_content_names_the_file(tmp_path: Path, text: str):
    path = tmp_path / "schema.json"
    path.write_text(text)
    with pytest.raises(SchemaError, match="not a valid schema") as info:
        read_schema(path)
    assert str(info.value).startswith(f"{path}: ")
