"""The OpenAPI document says what the service answers (issue 14, item 24): admin 400s, /metrics as
Prometheus text, the loaded model's record schema; and finite numbers up to float64's largest."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def openapi(client: TestClient) -> dict:
    return client.get("/openapi.json").json()


def test_admin_routes_document_their_400(client: TestClient, openapi: dict):
    for path, method in (("/thresholds/{name}", "put"), ("/active-threshold", "put"), ("/admin/reload", "post")):
        assert "400" in openapi["paths"][path][method]["responses"], path
    response = client.put("/thresholds/page", content=b"{nope", headers=AUTH)
    assert response.status_code == 400


def test_metrics_are_documented_as_prometheus_text(client: TestClient, openapi: dict):
    content = openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_score_body_publishes_the_loaded_models_records(openapi: dict):
    """Before: `records` items were `{}`, so a client could not learn the features from the document."""
    schema = openapi["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    records, columnar = schema["oneOf"]
    record = records["properties"]["records"]["items"]
    assert record["type"] == "object"
    assert set(record["required"]) == {"a", "b", "count", "color", "flag"}
    properties = record["properties"]
    assert properties["a"]["type"] == "number"  # required: never null
    assert properties["b"]["type"] == ["number", "null"]
    assert properties["flag"]["type"] == ["boolean", "null"]
    assert properties["color"]["type"] == ["string", "null"] and "red" in properties["color"]["description"]
    assert columnar["properties"]["columns"]["items"]["enum"] == ["a", "b", "count", "color", "flag"]
    reconstruct = openapi["paths"]["/reconstruct"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert reconstruct == schema


@pytest.mark.parametrize("n", [1, 20], ids=["per-cell", "per-column"])
def test_finite_numbers_up_to_the_largest_double_are_scored(client: TestClient, normal_record: dict, n: int):
    """Before: values in [1e308, 1.797e308] were refused as 'not finite'. Both parsing paths
    (per cell below 16 records, per column above) take them, and the score stays finite."""
    records = [{**normal_record, "b": 1.5e308}] * n
    response = client.post("/score", json={"records": records})
    assert response.status_code == 200, response.text
    assert all(result["score"] < float("inf") for result in response.json()["results"])
