"""Optional `ids` in /score and /reconstruct bodies are echoed as `id` in each result (issue 14, item 4)."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_score_echoes_ids_in_input_order(client: TestClient, normal_record, anomalous_record):
    body = {"records": [normal_record, anomalous_record], "ids": ["order-7", 42]}
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert (first["id"], second["id"]) == ("order-7", 42)
    assert second["score"] > first["score"]


def test_columnar_score_and_reconstruct_echo_ids(client: TestClient, normal_record):
    columns = list(normal_record)
    table = {"columns": columns, "data": [[normal_record[c] for c in columns]], "ids": ["row-1"]}
    response = client.post("/score", json=table)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == "row-1"
    response = client.post("/reconstruct", json={"records": [normal_record], "ids": [5]})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == 5


def test_without_ids_results_have_no_id(client: TestClient, normal_record):
    assert "id" not in client.post("/score", json={"records": [normal_record]}).json()["results"][0]


def test_ids_of_another_length_are_a_422_naming_ids(client: TestClient, normal_record):
    response = client.post("/score", json={"records": [normal_record], "ids": ["a", "b"]})
    assert response.status_code == 422
    assert "'ids' has 2 entries but the body has 1" in response.json()["detail"][0]["msg"]


def test_an_id_that_is_neither_text_nor_integer_is_a_422(client: TestClient, normal_record):
    response = client.post("/score", json={"records": [normal_record], "ids": [{"x": 1}]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "ids", 0]
