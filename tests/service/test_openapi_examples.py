"""Every request body the OpenAPI document offers works against the loaded model (issue 14, item 13).

`/docs` ("Try it out") fills each body from the document: the body's own `example`, else a sample
built from the schema the way Swagger UI builds one (a property's `example` / first of `examples`,
then `default`, `enum`, `const`, then a placeholder by type; every property of an object; one item
of an array; the first alternative of `oneOf` / `anyOf`). Each such body is sent as it is, with the
admin token, to an app serving the demo model (a short training run of `vae-anomaly demo`'s data),
the tiny tabular model, an image model and a sensor-stream model; every one must answer 2xx, and
its JSON must validate as the response model the document names for that status (as must any
response example the document gives).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.conftest import API_TOKEN, one_thread, tiny_config
from vae_anomaly.service import schemas
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PLACEHOLDERS = {"string": "string", "number": 0, "integer": 0, "boolean": True, "null": None}


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        _, _, *path = schema["$ref"].split("/")
        target: Any = document
        for part in path:
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def sample(schema: dict[str, Any], document: dict[str, Any]) -> Any:
    """The value Swagger UI puts in a body editor for `schema` (see the module docstring)."""
    schema = _resolve(schema, document)
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if schema.get(key):
            return sample(schema[key][0], document)
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind == "object" or kind is None:
        return {name: sample(sub, document) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [sample(schema.get("items", {}), document)]
    return PLACEHOLDERS[kind]


def request_bodies(document: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(method, path, body) for every operation with a JSON request body."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            if "example" in media:
                yield method, path, media["example"]
            elif media.get("examples"):
                for example in media["examples"].values():
                    yield method, path, example["value"]
            else:
                yield method, path, sample(media["schema"], document)


def response_model(document: dict[str, Any], method: str, path: str, status: int) -> type[BaseModel] | None:
    """The pydantic model behind the JSON schema documented for this response (by its $ref)."""
    response = document["paths"][path][method]["responses"].get(str(status), {})
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return getattr(schemas, ref.rsplit("/", 1)[-1]) if ref else None


def response_examples(document: dict[str, Any]) -> Iterator[tuple[str, str, int, Any]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                media = response.get("content", {}).get("application/json", {})
                found = [media["example"]] if "example" in media else []
                found += [e["value"] for e in media.get("examples", {}).values()]
                yield from ((method, path, int(status), example) for example in found)


def path_with(path: str, client: TestClient) -> str:
    """A concrete URL for a templated path: {name} is an existing threshold."""
    thresholds = client.get("/thresholds").json()["thresholds"]
    return path.replace("{name}", sorted(thresholds)[0])


def _demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vae_anomaly.training.demo_data import LABEL, make_demo_frame
    from vae_anomaly.training.tabular import fit_detector

    frame = make_demo_frame(n_normal=1500, seed=0)
    frame = frame[frame[LABEL] == 0].drop(columns=[LABEL])
    columns = {name: frame[name].to_numpy() for name in frame.columns}
    with one_thread():
        result = fit_detector(columns, tiny_config(epochs=3), version="demo-examples", progress=False)
    directory = tmp_path_factory.mktemp("demo") / "model"
    result.detector.save(directory)
    return directory


def _sequence_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    from vae_anomaly.training.sequence import fit_sequence_detector, sequence_train_config

    t = np.arange(300)
    readings = np.stack([np.sin(t / 4), 2 * np.cos(t / 4)], 1)
    config = sequence_train_config(epochs=2, window=8, device="cpu", score_samples=4)
    with one_thread():
        result = fit_sequence_detector(readings, ["flow", "pressure"], config, progress=False)
    directory = tmp_path_factory.mktemp("sequence") / "model"
    result.detector.save(directory)
    return directory


@pytest.fixture(scope="module", params=["demo", "tiny", "image", "sequence"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "demo":
        return _demo_model_dir(tmp_path_factory)
    if request.param == "sequence":
        return _sequence_model_dir(tmp_path_factory)
    fixture = {"tiny": "tiny_model_dir", "image": "tiny_image_model_dir"}[request.param]
    return request.getfixturevalue(fixture)


def test_every_request_example_is_answered_with_2xx(served: Path):
    settings = Settings(model_dir=served, device="cpu", api_token=API_TOKEN, max_batch=50, max_samples=100)
    with TestClient(create_app(settings)) as client:
        document = client.get("/openapi.json").json()
        bodies = list(request_bodies(document))
        assert {path for _, path, _ in bodies} >= {"/score", "/reconstruct", "/sample", "/active-threshold"}
        failures = []
        for method, path, body in bodies:
            response = client.request(method.upper(), path_with(path, client), json=body, headers=AUTH)
            if not 200 <= response.status_code < 300:
                failures.append(f"{method.upper()} {path} {body!r:.300} → {response.status_code} {response.text:.300}")
                continue
            model = response_model(document, method, path, response.status_code)
            assert model is not None, f"{method.upper()} {path}: {response.status_code} has no documented JSON schema"
            model.model_validate(response.json())
        assert not failures, "\n".join(failures)
        for method, path, status, example in response_examples(document):
            model = response_model(document, method, path, status)
            assert model is not None, f"{method.upper()} {path} {status}: an example without a schema"
            model.model_validate(example)


def test_schema_driven_tabular_bodies_fit_the_model(client: TestClient):
    """A tool that builds bodies from the schema alone (its field examples), not from the body
    example: the records and the columnar form of /score both fit the loaded model. Before, the
    field examples named the demo's features (amount, channel) whatever the model."""
    document = client.get("/openapi.json").json()
    records, columnar = document["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "oneOf"
    ]
    for schema in (records, columnar):
        body = {name: sample(sub, document) for name, sub in schema["properties"].items()}
        response = client.post("/score", json=body)
        assert response.status_code == 200, (body, response.text)
