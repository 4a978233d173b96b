"""The Open Inference Protocol (KServe V2) routes, called as a KServe or Triton client sends them
(request and response shapes from the protocol's REST spec): health, metadata, and `infer` mapped
onto the `/score` path (same scores), with errors in the protocol's `{"error": ...}` shape."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings

NAME = "vae-anomaly"


def _tensors(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """One tensor per feature, as a KServe client's InferInput(name, shape, datatype).set_data_from_numpy
    would serialise them."""
    types = {"a": "FP64", "b": "FP64", "count": "INT64", "color": "BYTES", "flag": "BOOL"}
    return [
        {"name": name, "shape": [len(records)], "datatype": dtype, "data": [r.get(name) for r in records]}
        for name, dtype in types.items()
    ]


def test_health_and_server_metadata(client: TestClient):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "vae-anomaly" and "version" in meta
    assert client.get(f"/v2/models/{NAME}/ready").status_code == 200
    assert client.get(f"/v2/models/{NAME}/versions/test-1/ready").status_code == 200


def test_model_metadata_lists_one_tensor_per_feature(client: TestClient):
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["name"] == NAME and meta["versions"] == ["test-1"]
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP64", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
        {"name": "count", "datatype": "FP64", "shape": [-1]},
        {"name": "color", "datatype": "BYTES", "shape": [-1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["score", "p_value", "is_anomaly"]


def test_infer_gives_the_scores_of_score(client: TestClient, normal_record, anomalous_record):
    records = [normal_record, anomalous_record, {**normal_record, "color": None, "flag": None}]
    expected = client.post("/score", json={"records": records}).json()["results"]
    response = client.post(f"/v2/models/{NAME}/infer", json={"id": "req-7", "inputs": _tensors(records)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == NAME and body["model_version"] == "test-1" and body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["score"] == {
        "name": "score",
        "datatype": "FP64",
        "shape": [3],
        "data": [r["score"] for r in expected],
    }
    assert outputs["p_value"]["data"] == [r["p_value"] for r in expected]
    assert outputs["is_anomaly"] == {
        "name": "is_anomaly",
        "datatype": "BOOL",
        "shape": [3],
        "data": [False, True, False],
    }


def test_infer_accepts_n_by_1_nested_data_and_picks_outputs(client: TestClient, normal_record):
    tensors = _tensors([normal_record, normal_record])
    for tensor in tensors:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[v] for v in tensor["data"]]  # type: ignore[attr-defined]
    body = {"inputs": tensors, "outputs": [{"name": "p_value"}]}
    response = client.post(f"/v2/models/{NAME}/versions/test-1/infer", json=body)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["p_value"]
    assert "id" not in response.json()


def test_a_left_out_tensor_is_missing(client: TestClient, normal_record):
    """Leaving out an optional feature's tensor means missing values; 'a' is required."""
    tensors = [t for t in _tensors([normal_record]) if t["name"] != "flag"]
    assert client.post(f"/v2/models/{NAME}/infer", json={"inputs": tensors}).status_code == 200
    tensors = [t for t in _tensors([normal_record]) if t["name"] != "a"]
    response = client.post(f"/v2/models/{NAME}/infer", json={"inputs": tensors})
    assert response.status_code == 400
    assert response.json() == {"error": "input 'a', row 0: feature is required and may not be null"}


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"name": "zz"}, 400, "input 'zz' is not a feature of the model"),
        ({"datatype": "BYTES"}, 400, "input 'a': datatype BYTES does not fit a numeric feature (use FP64)"),
        ({"shape": [3]}, 400, "input 'a': shape [3] but 1 values in data"),
        ({"shape": [1, 2]}, 400, "one feature per tensor"),
        ({"shape": [1, 1, 1]}, 400, "one feature per tensor"),
        ({"data": ["ten"], "datatype": "FP64"}, 400, "input 'a', row 0: expected a number"),
    ],
)
def test_bad_tensors_get_the_protocol_error(client: TestClient, normal_record, change, status, message):
    tensors = _tensors([normal_record])
    tensors[0] = {**tensors[0], **change}
    response = client.post(f"/v2/models/{NAME}/infer", json={"inputs": tensors})
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]


def test_protocol_errors(client: TestClient, normal_record):
    tensors = _tensors([normal_record])
    unknown = client.post("/v2/models/other/infer", json={"inputs": tensors})
    assert unknown.status_code == 404 and "unknown model 'other'" in unknown.json()["error"]
    assert client.get("/v2/models/other").status_code == 404
    assert client.get(f"/v2/models/{NAME}/versions/9/ready").status_code == 404
    bad_json = client.post(f"/v2/models/{NAME}/infer", content=b"{nope")
    assert bad_json.status_code == 400 and "malformed JSON" in bad_json.json()["error"]
    no_inputs = client.post(f"/v2/models/{NAME}/infer", json={"inputs": []})
    assert no_inputs.status_code == 400 and no_inputs.json()["error"].startswith("inputs:")
    wrong_output = client.post(f"/v2/models/{NAME}/infer", json={"inputs": tensors, "outputs": [{"name": "elbo"}]})
    assert wrong_output.status_code == 400 and "unknown output 'elbo'" in wrong_output.json()["error"]
    rows = client.post(f"/v2/models/{NAME}/infer", json={"inputs": _tensors([normal_record] * 51)})
    assert rows.status_code == 400 and "51 rows exceed the limit of 50" in rows.json()["error"]


def test_the_model_name_is_a_setting(settings: Settings, normal_record):
    with TestClient(create_app(settings.model_copy(update={"model_name": "fraud"}))) as client:
        assert client.get("/v2/models/fraud/ready").status_code == 200
        assert client.post("/v2/models/fraud/infer", json={"inputs": _tensors([normal_record])}).status_code == 200
        assert client.get(f"/v2/models/{NAME}").status_code == 404


def _kserve_body(records: list[dict[str, object]], **extra: object) -> dict[str, object]:
    """What KServe's Python client sends for a JSON request (`InferRequest.to_rest()`: it always
    adds an `id` and repeats the model's name in the body)."""
    return {"id": "5f0c7e0a-1d2b-4c3d-9e8f-000000000001", "model_name": NAME, "inputs": _tensors(records), **extra}


def test_a_kserve_client_request_body_is_accepted(client: TestClient, normal_record, anomalous_record):
    records = [normal_record, anomalous_record]
    expected = [r["score"] for r in client.post("/score", json={"records": records}).json()["results"]]
    response = client.post(f"/v2/models/{NAME}/infer", json=_kserve_body(records))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected
    other = client.post(f"/v2/models/{NAME}/infer", json={**_kserve_body(records), "model_name": "fraud"})
    assert other.status_code == 400
    assert other.json() == {"error": "model_name 'fraud' in the body differs from 'vae-anomaly' in the path"}


def _binary_request(records: list[dict[str, object]], outputs: list[dict[str, object]] | None = None):
    """A body as KServe's and Triton's clients send tensors set from numpy arrays with
    `binary_data=True`: the JSON header, then each tensor's raw bytes (little-endian numbers, BOOL
    one byte each, BYTES with a 4-byte length before each element), the header's length in
    `Inference-Header-Content-Length`. A missing number is a NaN."""
    import struct

    arrays = {
        "a": ("FP64", np.array([r["a"] for r in records], dtype="<f8")),
        "b": ("FP64", np.array([np.nan if r["b"] is None else r["b"] for r in records], dtype="<f8")),
        "count": ("INT64", np.array([r["count"] for r in records], dtype="<i8")),
        "flag": ("BOOL", np.array([r["flag"] for r in records], dtype=bool)),
    }
    raw = {name: array.tobytes() for name, (_, array) in arrays.items()}
    raw["color"] = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in (str(r["color"]) for r in records))
    types = {**{name: dtype for name, (dtype, _) in arrays.items()}, "color": "BYTES"}
    inputs = [
        {
            "name": name,
            "shape": [len(records)],
            "datatype": types[name],
            "parameters": {"binary_data_size": len(raw[name])},
        }
        for name in raw
    ]
    header = orjson.dumps(
        {"id": "1", "model_name": NAME, "inputs": inputs, **({"outputs": outputs} if outputs else {})}
    )
    return header + b"".join(raw.values()), {"Inference-Header-Content-Length": str(len(header))}


def test_binary_tensors_in_and_out(client: TestClient, normal_record, anomalous_record):
    records = [normal_record, anomalous_record, {**normal_record, "b": None}]
    expected = client.post("/score", json={"records": records}).json()["results"]
    body, headers = _binary_request(records)
    response = client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["score"] == [r["score"] for r in expected]  # the NaN in 'b' was read as missing
    assert outputs["is_anomaly"] == [r["is_anomaly"] for r in expected]

    asked = [{"name": "score", "parameters": {"binary_data": True}}, {"name": "is_anomaly"}]
    body, headers = _binary_request(records, asked)
    response = client.post(f"/v2/models/{NAME}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:length])
    score, flags = header["outputs"]
    assert score == {"name": "score", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 24}}
    assert np.frombuffer(response.content[length:], dtype="<f8").tolist() == [r["score"] for r in expected]
    assert flags["data"] == [r["is_anomaly"] for r in expected]


@pytest.mark.parametrize(
    ("cut", "headers", "message"),
    [
        (8, None, "runs past the"),
        (0, {"Inference-Header-Content-Length": "nope"}, "is not a number of bytes"),
        (0, {"Inference-Header-Content-Length": "999999"}, "does not fit a body of"),
    ],
)
def test_bad_binary_data_gets_the_protocol_error(client: TestClient, normal_record, cut, headers, message):
    body, sent = _binary_request([normal_record])
    response = client.post(f"/v2/models/{NAME}/infer", content=body[: len(body) - cut], headers=headers or sent)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_binary_data_is_advertised(client: TestClient):
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_an_image_model_answers_that_v2_maps_tables_only(tiny_image_model_dir):
    settings = Settings(model_dir=tiny_image_model_dir, device="cpu")
    with TestClient(create_app(settings)) as image_client:
        assert image_client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
        tensor = {"name": "pixels", "shape": [1, 8, 8], "datatype": "FP64", "data": [0.0] * 64}
        for response in (
            image_client.post(f"/v2/models/{NAME}/infer", json={"inputs": [tensor]}),
            image_client.get(f"/v2/models/{NAME}"),
        ):
            assert response.status_code == 400
            assert response.json() == {
                "error": "the V2 protocol here maps one tensor per feature of a table; this model is an image "
                "model: send 'images' or 'arrays' (use /score)"
            }
