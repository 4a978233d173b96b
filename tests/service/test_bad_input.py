"""Bad input gets a 4xx whose body names the record, the field and the problem; never a 500."""

from __future__ import annotations

import math

import pytest


def detail(response) -> list[dict]:
    body = response.json()
    assert set(body) == {"detail"}
    assert all(set(item) == {"loc", "msg", "type"} for item in body["detail"])
    return body["detail"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"a": "abc"}, "a", "expected a number, got string 'abc'"),
        ({"a": True}, "a", "expected a number, got boolean true"),
        ({"color": 3}, "color", "expected a category (a string), got number 3"),
        ({"flag": "yes"}, "flag", "expected true or false, got string 'yes'"),
        ({"a": None}, "a", "feature is required and may not be null"),
        ({"count": [1]}, "count", "expected a number, got an array"),
    ],
)
def test_wrong_values_name_record_and_field(client, normal_record, change, field, message):
    records = [normal_record, {**normal_record, **change}]
    response = client.post("/score", json={"records": records})
    assert response.status_code == 422
    (item,) = detail(response)
    assert item["loc"] == ["body", "records", 1, field]
    assert item["msg"] == message


def test_absent_and_unknown_keys(client, normal_record):
    record = {k: v for k, v in normal_record.items() if k != "b"} | {"extra": 1}
    response = client.post("/score", json={"records": [record]})
    assert response.status_code == 422
    items = {tuple(item["loc"]): item for item in detail(response)}
    assert "absent" in items[("body", "records", 0, "b")]["msg"]
    assert "unknown feature" in items[("body", "records", 0, "extra")]["msg"]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_tokens_are_rejected(client, token):
    body = b'{"records": [{"a": ' + token + b', "b": 1, "count": 1, "color": "red", "flag": true}]}'
    response = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "NaN and Infinity are not JSON" in detail(response)[0]["msg"]


def test_huge_number_is_not_finite(client, normal_record):
    body = b'{"records": [{"a": 1e400, "b": 1, "count": 1, "color": "red", "flag": true}]}'
    response = client.post("/score", content=body)
    assert 400 <= response.status_code < 500


def test_empty_batch_is_422(client):
    response = client.post("/score", json={"records": []})
    assert response.status_code == 422
    assert detail(response)[0]["loc"] == ["body", "records"]


def test_oversized_batch_is_413(client, normal_record):
    response = client.post("/score", json={"records": [normal_record] * 51})
    assert response.status_code == 413
    item = detail(response)[0]
    assert item["loc"] == ["body", "records"] and "limit of 50" in item["msg"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[1, 2]", 422),
        (b'{"records": "abc"}', 422),
        (b'{"records": [1]}', 422),
        (b'{"records": [{}], "explain": -1}', 422),
        (b'{"records": [{}], "other": 1}', 422),
        (b'{"rows": []}', 422),
        (b"\xff\xfe", 400),
    ],
)
def test_malformed_bodies(client, body, status):
    for route in ("/score", "/reconstruct"):
        response = client.post(route, content=body)
        assert response.status_code == status, (route, body, response.text)
        assert detail(response)[0]["loc"][0] == "body"


def test_sample_limits(client):
    assert client.post("/sample", json={"n": 0}).status_code == 422
    assert client.post("/sample", json={"n": 101}).status_code == 413
    assert client.post("/sample", json={"n": 1, "temperature": 0}).status_code == 422
    assert client.post("/sample", json={"n": 1, "seed": -1}).status_code == 422
    assert client.post("/sample", content=b'{"n": "many"}').status_code == 422


def test_no_payload_produces_a_500(client, normal_record):
    """A sweep of odd values in every position: each gets a 4xx or a 200, never a 5xx."""
    odd_values = [None, "", "x" * 5000, -0.0, 1e308, -1e308, 2**70, [], {}, True, "NaN", "∞", 0]
    for name in normal_record:
        for value in odd_values:
            response = client.post("/score", json={"records": [{**normal_record, name: value}]})
            assert response.status_code < 500, (name, value, response.text)
            if response.status_code == 200:
                result = response.json()["results"][0]
                assert all(math.isfinite(result[key]) for key in ("score", "elbo", "p_value")), result
            response = client.post("/reconstruct", json={"records": [{**normal_record, name: value}]})
            assert response.status_code < 500, (name, value, response.text)
