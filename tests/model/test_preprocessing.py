"""model.kinds.tabular.preprocessing: standardisation, strict record checks, file-column checks, encoding and the
round trip back to records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_anomaly.model.errors import InputError, InputIssue
from vae_anomaly.model.kinds.tabular.preprocessing import (
    MAX_ISSUES,
    TabularCodec,
    check_columns,
    fit_preprocessing,
    records_to_columns,
)
from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema

GOOD = {"color": "green", "amount": 120.5, "flag": True, "count": 4}


# -- fit_preprocessing ----------------------------------------------------------------------------


def test_fit_preprocessing_standardises_ignoring_missing():
    schema = Schema(
        features=[
            FeatureSpec(name="x", type="numeric"),
            FeatureSpec(name="const", type="numeric"),
            FeatureSpec(name="empty", type="numeric"),
            FeatureSpec(name="c", type="categorical", categories=["a"]),
        ]
    )
    columns = {
        "x": np.array([1.0, 3.0, np.nan, 5.0]),
        "const": np.array([7.0, 7.0, 7.0, 7.0]),
        "empty": np.full(4, np.nan),
        "c": np.array(["a"] * 4, dtype=object),
    }
    stats = fit_preprocessing(schema, columns).numeric
    assert set(stats) == {"x", "const", "empty"}  # only numeric features are standardised
    assert stats["x"].center == pytest.approx(3.0)
    assert stats["x"].scale == pytest.approx(np.std([1.0, 3.0, 5.0]))
    # A constant column is scaled by 1 (no division by ~0); an empty one gets the identity.
    assert (stats["const"].center, stats["const"].scale) == (7.0, 1.0)
    assert (stats["empty"].center, stats["empty"].scale) == (0.0, 1.0)


def test_tails_scaling_takes_asinh_of_heavy_tailed_features_only_and_inverts():
    rng = np.random.default_rng(0)
    schema = Schema(features=[FeatureSpec(name="heavy", type="numeric"), FeatureSpec(name="normal", type="numeric")])
    heavy = rng.standard_t(1.5, size=2000)  # a few values hundreds of spreads out
    columns = {"heavy": heavy, "normal": rng.normal(size=2000)}
    assert all(s.transform == "identity" for s in fit_preprocessing(schema, columns).numeric.values())
    stats = fit_preprocessing(schema, columns, "tails").numeric
    assert stats["heavy"].transform == "asinh" and stats["normal"].transform == "identity"
    assert stats["heavy"].center == pytest.approx(np.median(heavy))
    codec = TabularCodec(schema, fit_preprocessing(schema, columns, "tails"))
    encoded = codec.encode(columns).numeric.numpy().astype(np.float64)
    # asinh keeps the order and compresses the tail: the bulk is not squeezed near 0 any more.
    assert np.all(np.diff(encoded[np.argsort(heavy), 0]) >= -1e-6)
    assert encoded[:, 0].std() == pytest.approx(1.0, abs=1e-3) and np.abs(encoded[:, 0]).max() < 10
    back = codec.to_original(encoded)
    np.testing.assert_allclose(back[:, 0], heavy, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(back[:, 1], columns["normal"], rtol=1e-4, atol=1e-5)


# -- records_to_columns: accepted input -----------------------------------------------------------


def test_records_to_columns_dtypes_and_missing(small_schema: Schema):
    records = [GOOD, {"color": None, "amount": 3, "flag": False, "count": None}]
    columns = records_to_columns(small_schema, records)
    assert list(columns) == small_schema.names
    assert columns["color"].dtype == object and columns["color"].tolist() == ["green", None]
    assert columns["amount"].dtype == np.float64 and columns["amount"].tolist() == [120.5, 3.0]
    assert columns["flag"].tolist() == [1.0, 0.0]
    assert columns["count"][0] == 4.0 and np.isnan(columns["count"][1])


def test_records_to_columns_empty_list_gives_empty_columns(small_schema: Schema):
    columns = records_to_columns(small_schema, [])
    assert all(len(values) == 0 for values in columns.values())


# -- records_to_columns: strict errors ------------------------------------------------------------


def _issues(schema: Schema, records: list[object]) -> list[InputIssue]:
    with pytest.raises(InputError) as info:
        records_to_columns(schema, records)
    return info.value.issues


def test_absent_key_is_an_error(small_schema: Schema):
    record = {k: v for k, v in GOOD.items() if k != "amount"}
    (issue,) = _issues(small_schema, [GOOD, record])
    assert issue.loc == ("records", 1, "amount")
    assert issue.msg == "feature is absent; send null for a missing value"
    assert issue.type == "missing"


def test_unknown_key_is_an_error_listing_expected_features(small_schema: Schema):
    (issue,) = _issues(small_schema, [{**GOOD, "colour": "red"}])
    assert issue.loc == ("records", 0, "colour")
    assert issue.msg == "unknown feature; the model expects color, amount, flag, count"
    assert issue.type == "extra_forbidden"


def test_unknown_key_replacing_a_known_one_reports_both(small_schema: Schema):
    record = {k: v for k, v in GOOD.items() if k != "flag"} | {"flags": True}
    issues = _issues(small_schema, [record])
    assert [(i.loc, i.type) for i in issues] == [
        (("records", 0, "flags"), "extra_forbidden"),
        (("records", 0, "flag"), "missing"),
    ]


@pytest.mark.parametrize(
    ("feature", "value", "message", "kind"),
    [
        ("amount", "12.5", "expected a number, got string '12.5'", "float_type"),
        ("amount", True, "expected a number, got boolean true", "float_type"),
        ("amount", [1.0], "expected a number, got an array", "float_type"),
        ("amount", float("nan"), "expected a finite number, got nan", "finite_number"),
        ("amount", float("inf"), "expected a finite number, got inf", "finite_number"),
        ("amount", 10**400, "expected a finite number, got " + repr(10**400), "finite_number"),
        ("count", False, "expected a number, got boolean false", "float_type"),
        ("color", 3, "expected a category (a string), got number 3", "string_type"),
        ("color", True, "expected a category (a string), got boolean true", "string_type"),
        ("color", {"name": "red"}, "expected a category (a string), got an object", "string_type"),
        ("flag", "true", "expected true or false, got string 'true'", "bool_type"),
        ("flag", 1, "expected true or false, got number 1", "bool_type"),
    ],
)
def test_wrong_types_are_errors(small_schema: Schema, feature: str, value: object, message: str, kind: str):
    (issue,) = _issues(small_schema, [GOOD, GOOD, {**GOOD, feature: value}])
    assert issue.loc == ("records", 2, feature)
    assert issue.msg == message
    assert issue.type == kind


def test_long_strings_are_shortened_in_messages(small_schema: Schema):
    (issue,) = _issues(small_schema, [{**GOOD, "amount": "x" * 100}])
    assert issue.msg == "expected a number, got string '" + "x" * 37 + "...'"


def test_null_in_required_feature_is_an_error(small_schema: Schema):
    schema = Schema(features=[f.model_copy(update={"required": f.name == "amount"}) for f in small_schema.features])
    records_to_columns(schema, [{**GOOD, "color": None}])  # optional: fine
    (issue,) = _issues(schema, [{**GOOD, "amount": None}])
    assert issue.loc == ("records", 0, "amount")
    assert issue.msg == "feature is required and may not be null"
    assert issue.type == "missing_required"


@pytest.mark.parametrize(
    ("record", "described"), [([1, 2], "an array"), ("amount=3", "string 'amount=3'"), (None, "NoneType")]
)
def test_non_object_record_is_an_error(small_schema: Schema, record: object, described: str):
    (issue,) = _issues(small_schema, [GOOD, record])
    assert issue.loc == ("records", 1)
    assert issue.msg == f"expected an object of features, got {described}"
    assert issue.type == "dict_type"


def test_every_issue_is_collected_and_summarised(small_schema: Schema):
    records = [{**GOOD, "amount": "x"}, GOOD, {**GOOD, "flag": 0, "color": 1}]
    with pytest.raises(InputError) as info:
        records_to_columns(small_schema, records, loc_prefix="rows")
    assert [issue.loc for issue in info.value.issues] == [
        ("rows", 0, "amount"),
        ("rows", 2, "color"),
        ("rows", 2, "flag"),
    ]
    assert str(info.value) == "rows 0 amount: expected a number, got string 'x' (and 2 more)"


def test_issues_are_capped(small_schema: Schema):
    records = [{**GOOD, "amount": "x", "count": "y"}] * (MAX_ISSUES + 50)
    with pytest.raises(InputError) as info:
        records_to_columns(small_schema, records)
    assert len(info.value.issues) == MAX_ISSUES


# -- check_columns (file data) --------------------------------------------------------------------


def _file_columns(**changes: np.ndarray) -> dict[str, np.ndarray]:
    columns = {
        "color": np.array(["red", "blue", None], dtype=object),
        "amount": np.array([1.0, 2.5, np.nan]),
        "flag": np.array([True, False, True]),
        "count": np.array([1, 2, 3]),
        "id": np.array(["r1", "r2", "r3"], dtype=object),  # extra columns are ignored
    }
    columns.update(changes)
    return columns


def test_check_columns_canonical_dtypes(small_schema: Schema):
    out = check_columns(small_schema, _file_columns())
    assert list(out) == small_schema.names  # extras dropped, schema order
    assert out["amount"].dtype == np.float64 and np.isnan(out["amount"][2])
    assert out["count"].dtype == np.float64 and out["count"].tolist() == [1.0, 2.0, 3.0]
    assert out["flag"].dtype == np.float64 and out["flag"].tolist() == [1.0, 0.0, 1.0]
    assert out["color"].tolist() == ["red", "blue", None]


def test_check_columns_reads_text_cells_loosely(small_schema: Schema):
    out = check_columns(
        small_schema,
        _file_columns(
            amount=np.array(["1.5", "", None], dtype=object),
            flag=np.array(["true", "False", 1], dtype=object),
            color=np.array([7, "blue", np.nan], dtype=object),
        ),
    )
    assert out["amount"][0] == 1.5 and np.isnan(out["amount"][1:]).all()
    assert out["flag"].tolist() == [1.0, 0.0, 1.0]
    assert out["color"].tolist() == ["7", "blue", None]  # categories are compared as text


def test_check_columns_text_in_numeric_column_names_the_row(small_schema: Schema):
    with pytest.raises(InputError) as info:
        check_columns(small_schema, _file_columns(amount=np.array(["1.0", "abc", "2"], dtype=object)))
    (issue,) = info.value.issues
    assert issue.loc == ("row", 1, "amount")
    assert issue.msg == "expected a number, got string 'abc'"
    assert str(info.value) == "row 1 amount: expected a number, got string 'abc'"


@pytest.mark.parametrize(
    "values",
    [np.array([1.0, np.inf, -np.inf]), np.array(["1", "inf", "-inf"], dtype=object)],
    ids=["float-column", "text-column"],
)
def test_check_columns_rejects_infinity(small_schema: Schema, values: np.ndarray):
    with pytest.raises(InputError) as info:
        check_columns(small_schema, _file_columns(amount=values))
    assert [issue.loc for issue in info.value.issues] == [("row", 1, "amount"), ("row", 2, "amount")]
    assert all(issue.msg.startswith("expected a finite number, got ") for issue in info.value.issues)


def test_check_columns_required_numeric_may_not_be_missing():
    schema = Schema(features=[FeatureSpec(name="x", type="numeric", required=True)])
    with pytest.raises(InputError) as info:
        check_columns(schema, {"x": np.array([1.0, np.nan, 3.0])})
    (issue,) = info.value.issues
    assert (issue.loc, issue.msg) == (("row", 1, "x"), "feature is required and may not be missing")


def test_check_columns_bad_boolean(small_schema: Schema):
    with pytest.raises(InputError) as info:
        check_columns(small_schema, _file_columns(flag=np.array(["yes", True, 2], dtype=object)))
    assert [(i.loc, i.msg) for i in info.value.issues] == [
        (("row", 0, "flag"), "expected true or false, got string 'yes'"),
        (("row", 2, "flag"), "expected true or false, got number 2"),
    ]


def test_check_columns_absent_column(small_schema: Schema):
    columns = _file_columns()
    del columns["flag"], columns["count"]
    with pytest.raises(InputError) as info:
        check_columns(small_schema, columns)
    assert [(i.loc, i.msg) for i in info.value.issues] == [
        (("columns", "flag"), "column is absent from the data"),
        (("columns", "count"), "column is absent from the data"),
    ]


# -- encode ---------------------------------------------------------------------------------------


def test_encode_shapes_dtypes_and_masks(small_codec: TabularCodec):
    records = [GOOD, {"color": "purple", "amount": None, "flag": None, "count": 1}]
    batch = small_codec.encode(records_to_columns(small_codec.schema, records))
    assert len(batch) == 2
    assert small_codec.input_dim == 2 + 3 + 1 + 4
    assert batch.x_in.shape == (2, small_codec.input_dim) and batch.x_in.dtype == torch.float32
    assert batch.numeric.dtype == torch.float32 and batch.categories.dtype == torch.int64
    assert batch.numeric_mask.dtype == batch.categorical_mask.dtype == batch.boolean_mask.dtype == torch.bool
    # amount (120.5 - 100) / 20; count (4 - 3) / 2
    torch.testing.assert_close(batch.numeric[0], torch.tensor([1.025, 0.5]))
    assert batch.numeric_mask.tolist() == [[True, True], [False, True]]
    assert batch.numeric[1, 0].item() == 0.0  # missing entries are 0 in the values
    assert batch.categories.tolist() == [[1], [-1]]
    assert batch.unseen.tolist() == [[False], [True]]
    assert batch.categorical_mask.tolist() == [[True], [True]]  # unseen still counts as observed
    assert batch.boolean.tolist() == [[1.0], [0.0]] and batch.boolean_mask.tolist() == [[True], [False]]
    # x_in = numeric | one-hot | boolean | observed indicator per feature in schema order
    assert batch.x_in[0].tolist() == pytest.approx([1.025, 0.5, 0, 1, 0, 1, 1, 1, 1, 1])
    assert batch.x_in[1].tolist() == pytest.approx([0, -1.0, 0, 0, 0, 0, 1, 0, 0, 1])


def test_input_feature_index_maps_every_input_column(small_codec: TabularCodec):
    # schema positions: color 0, amount 1, flag 2, count 3
    assert small_codec.input_feature_index().tolist() == [1, 3, 0, 0, 0, 2, 0, 1, 2, 3]


def test_missing_matrix(small_codec: TabularCodec):
    records = [GOOD, {"color": None, "amount": 1.0, "flag": None, "count": 2}]
    missing = small_codec.missing(records_to_columns(small_codec.schema, records))
    assert missing.dtype == bool
    assert missing.tolist() == [[False, False, False, False], [True, False, True, False]]


def test_slice_and_to_keep_every_tensor(small_codec: TabularCodec):
    batch = small_codec.encode(records_to_columns(small_codec.schema, [GOOD, GOOD, GOOD]))
    part = batch.slice(1, 3).to("cpu")
    assert len(part) == 2
    assert part.categories.shape == (2, 1) and part.boolean_mask.shape == (2, 1)


# -- round trip -----------------------------------------------------------------------------------


def test_records_encode_decode_round_trip(small_codec: TabularCodec):
    records = [
        GOOD,
        {"color": "red", "amount": -3.25, "flag": False, "count": 0},
        {"color": "blue", "amount": 1e6, "flag": True, "count": 17},
    ]
    batch = small_codec.encode(records_to_columns(small_codec.schema, records))
    decoded = small_codec.decode_records(
        batch.numeric.double().numpy(), batch.categories.numpy(), batch.boolean.numpy()
    )
    assert [list(r) for r in decoded] == [small_codec.schema.names] * 3
    for original, back in zip(records, decoded, strict=True):
        assert back["color"] == original["color"]
        assert back["flag"] is original["flag"]
        assert back["count"] == original["count"] and type(back["count"]) is int
        assert back["amount"] == pytest.approx(original["amount"], rel=1e-6)


def test_to_original_inverts_standardisation_and_rounds_integers(small_codec: TabularCodec):
    values = small_codec.to_original(np.array([[0.0, 0.0], [1.0, 0.3], [-2.0, -0.74]]))
    assert values.dtype == np.float64
    np.testing.assert_allclose(values[:, 0], [100.0, 120.0, 60.0])
    np.testing.assert_array_equal(values[:, 1], [3.0, 4.0, 2.0])  # 3.6 → 4, 1.52 → 2
