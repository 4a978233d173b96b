"""The tabular CVAE end to end: trained with condition columns, scored and served through the same
routes as every family, sampled given a condition, 422s naming what is absent or unknown, reloaded
with identical scores; and the contextual anomalies it exists for, which an unconditional VAE of the
features cannot see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from tests.conftest import API_TOKEN, one_thread
from vae_anomaly.model.detector import Detector
from vae_anomaly.model.errors import InputError, UnsupportedError
from vae_anomaly.service.app import create_app
from vae_anomaly.service.settings import Settings
from vae_anomaly.training.cli import main
from vae_anomaly.training.contextual_data import CONTEXT, LABEL, contextual_columns
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import OptionsError, TrainConfig

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TINY = {"epochs": 30, "hidden_dims": [32, 16], "latent_dim": 2, "score_samples": 8, "patience": 10}


def training_columns(n: int = 1200, seed: int = 0) -> dict[str, np.ndarray]:
    columns = contextual_columns(n, 0, seed=seed)
    columns.pop(LABEL)
    return columns


@pytest.fixture(scope="module")
def cvae_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainConfig(**TINY, family="cvae", condition_columns=[CONTEXT])
    with one_thread():
        result = fit_detector(training_columns(), config, version="cvae-1", progress=False)
    directory = tmp_path_factory.mktemp("artifact") / "cvae"
    result.detector.save(directory)
    return directory


@pytest.fixture
def cvae_client(cvae_model_dir: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=cvae_model_dir, device="cpu", api_token=API_TOKEN, max_batch=50, max_samples=100)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def record(segment: str, amount: float) -> dict[str, object]:
    return {CONTEXT: segment, "amount": amount, "duration": 0.5 * amount, "noise": 0.0}


def test_the_manifest_records_the_condition_and_it_is_no_feature(cvae_model_dir: Path):
    detector = Detector.load(cvae_model_dir, "cpu")
    assert detector.manifest.family == "cvae"
    condition = detector.manifest.kind_config.model_dump()["condition"]
    assert condition["variables"] == [{"name": CONTEXT, "values": ["s0", "s1", "s2", "s3"], "numeric": False}]
    assert CONTEXT not in detector.kind.input_signature().names  # type: ignore[attr-defined]


def test_score_is_minus_the_elbo_given_the_condition(cvae_client: TestClient):
    # amount 8 is typical of segment s2 and four standard deviations from s1's typical 4
    response = cvae_client.post("/score", json={"records": [record("s2", 8.0), record("s1", 8.0)], "explain": 5})
    assert response.status_code == 200, response.text
    normal, contextual = response.json()["results"]
    assert contextual["score"] > normal["score"] + 4
    assert normal["score"] == pytest.approx(-normal["elbo"])
    assert contextual["p_value"] < normal["p_value"]
    for result in (normal, contextual):  # the condition is an input, never scored or explained
        assert {f["feature"] for f in result["top_features"]} == {"amount", "duration", "noise"}


def test_columnar_bodies_carry_the_condition_too(cvae_client: TestClient):
    rows = [record("s2", 8.0), record("s1", 8.0)]
    by_records = cvae_client.post("/score", json={"records": rows}).json()["results"]
    names = ["noise", CONTEXT, "amount", "duration"]
    body = {"columns": names, "data": [[row[name] for name in names] for row in rows]}
    by_columns = cvae_client.post("/score", json=body)
    assert by_columns.status_code == 200, by_columns.text
    assert [r["score"] for r in by_columns.json()["results"]] == pytest.approx([r["score"] for r in by_records])


def test_a_record_without_its_condition_gets_a_422_naming_it(cvae_client: TestClient):
    bare = {"amount": 8.0, "duration": 4.0, "noise": 0.0}
    response = cvae_client.post("/score", json={"records": [record("s2", 8.0), bare]})
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "records", 1, CONTEXT]
    assert "condition column is absent" in item["msg"] and "'s0'" in item["msg"]


def test_an_unknown_condition_value_gets_a_422_naming_it(cvae_client: TestClient):
    response = cvae_client.post("/score", json={"records": [record("s9", 8.0)]})
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "records", 0, CONTEXT]
    assert "unknown condition value 's9'" in item["msg"]
    columnar = cvae_client.post("/score", json={"columns": ["amount", "duration", "noise"], "data": [[1, 1, 1]]})
    assert columnar.status_code == 422
    assert columnar.json()["detail"][0]["loc"] == ["body", "columns", CONTEXT]


def test_reconstruct_and_thresholds_work_through_the_same_routes(cvae_client: TestClient):
    response = cvae_client.post("/reconstruct", json={"records": [record("s3", 12.0)]})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["reconstruction"][CONTEXT] == "s3"
    assert result["reconstruction"]["amount"] == pytest.approx(12.0, abs=1.5)
    assert set(result["feature_errors"]) == {"amount", "duration", "noise"}
    thresholds = cvae_client.get("/thresholds").json()
    assert thresholds["active"] == "warn"
    described = cvae_client.get("/model").json()
    assert described["family"] == "cvae" and described["condition"]["variables"][0]["name"] == CONTEXT


def test_sample_given_a_condition_carries_it(cvae_client: TestClient):
    response = cvae_client.post("/sample", json={"n": 40, "seed": 3, "condition": {CONTEXT: "s3"}})
    assert response.status_code == 200, response.text
    samples = response.json()["samples"]
    assert {s[CONTEXT] for s in samples} == {"s3"}
    assert np.mean([s["amount"] for s in samples]) == pytest.approx(12.0, abs=1.5)  # segment s3's amounts
    bare = cvae_client.post("/sample", json={"n": 5, "seed": 3, "condition": "s0"})  # one variable: the bare value
    assert bare.status_code == 200
    assert np.mean([s["amount"] for s in bare.json()["samples"]]) == pytest.approx(0.0, abs=1.5)


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"n": 3}, ["body", "condition"], "this model is conditional"),
        ({"n": 3, "condition": {CONTEXT: "s7"}}, ["body", "condition", CONTEXT], "unknown condition value 's7'"),
        ({"n": 3, "condition": {"region": "eu"}}, ["body", "condition", "region"], "unknown condition variable"),
    ],
)
def test_sample_without_or_with_an_unknown_condition_gets_a_422(cvae_client: TestClient, body, loc, words):
    response = cvae_client.post("/sample", json=body)
    assert response.status_code == 422
    items = response.json()["detail"]
    assert items[0]["loc"] == loc and words in items[0]["msg"]


def test_an_unconditional_model_refuses_a_condition(client: TestClient):
    response = client.post("/sample", json={"n": 2, "condition": {"color": "red"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "condition"]


def test_reload_gives_the_same_scores(cvae_model_dir: Path, tmp_path: Path):
    rows = [record("s0", 0.5), record("s0", 8.0)]
    detector = Detector.load(cvae_model_dir, "cpu")
    scores = detector.score(detector.kind.columns_from_records(rows)).terms.score  # type: ignore[attr-defined]
    detector.save(tmp_path / "copy")
    again = Detector.load(tmp_path / "copy", "cpu")
    assert again.score(again.kind.columns_from_records(rows)).terms.score.tolist() == scores.tolist()  # type: ignore[attr-defined]
    settings = Settings(model_dir=cvae_model_dir, device="cpu", api_token=API_TOKEN)
    with TestClient(create_app(settings)) as client:
        reload = client.post("/admin/reload", json={"model_dir": str(tmp_path / "copy")}, headers=AUTH)
        assert reload.status_code == 200, reload.text
        served = client.post("/score", json={"records": rows}).json()["results"]
    assert [r["score"] for r in served] == pytest.approx(scores.tolist())


def test_the_cvae_detects_contextual_anomalies_the_vae_cannot():
    """The documented generator (`training.contextual_data`): every anomalous value is normal in
    another segment. The VAE of the features alone scores them at chance; the CVAE given the
    segment separates them almost perfectly."""
    test = contextual_columns(400, 100, seed=1)
    labels = test.pop(LABEL)
    features_only = {name: values for name, values in test.items() if name != CONTEXT}
    auroc = {}
    with one_thread():
        for family, columns, scored in (
            ("cvae", training_columns(), test),
            ("vae", {k: v for k, v in training_columns().items() if k != CONTEXT}, features_only),
        ):
            options = {"condition_columns": [CONTEXT]} if family == "cvae" else {}
            detector = fit_detector(columns, TrainConfig(**TINY, family=family, **options), progress=False).detector
            scores = detector.score(detector.kind.columns_from_table(scored)).terms.score  # type: ignore[attr-defined]
            auroc[family] = roc_auc_score(labels, scores)
    assert auroc["cvae"] > 0.95
    assert auroc["vae"] < 0.65
    assert auroc["cvae"] > auroc["vae"] + 0.3


def test_condition_columns_belong_to_conditional_families():
    columns = training_columns(200)
    with pytest.raises(OptionsError, match="family 'vae' models none"):
        fit_detector(columns, TrainConfig(**{**TINY, "epochs": 1}, condition_columns=[CONTEXT]), progress=False)
    with pytest.raises(UnsupportedError, match="--condition-columns"):
        fit_detector(columns, TrainConfig(**{**TINY, "epochs": 1}, family="cvae"), progress=False)
    with pytest.raises(InputError, match="condition column is absent"):
        detector = fit_detector(
            columns, TrainConfig(**{**TINY, "epochs": 1}, family="cvae", condition_columns=[CONTEXT]), progress=False
        ).detector
        detector.kind.columns_from_table({k: v for k, v in columns.items() if k != CONTEXT})  # type: ignore[attr-defined]


def test_cli_trains_scores_and_refuses_a_missing_condition(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import pandas as pd

    data = tmp_path / "train.csv"
    pd.DataFrame(training_columns(300)).to_csv(data, index=False)
    model = tmp_path / "model"
    argv = ["train", str(data), "--out", str(model), "--family", "cvae", "--condition-columns", CONTEXT]
    with one_thread():
        assert main([*argv, "--epochs", "2", "--quiet"]) == 0
    test = tmp_path / "test.csv"
    pd.DataFrame([record("s1", 4.0), record("s1", 12.0)]).to_csv(test, index=False)
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(model), str(test), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    pd.DataFrame([record("s1", 4.0)]).drop(columns=[CONTEXT]).to_csv(test, index=False)
    capsys.readouterr()
    assert main(["score", str(model), str(test)]) == 2
    assert "segment: condition column is absent" in capsys.readouterr().err
    assert (
        main(["train", str(data), "--out", str(tmp_path / "m2"), "--condition-columns", CONTEXT, "--epochs", "1"]) == 2
    )
    assert "models none" in capsys.readouterr().err
    labelled = tmp_path / "labelled.csv"
    pd.DataFrame(contextual_columns(200, 40, seed=3)).to_csv(labelled, index=False)
    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["evaluate", str(model), str(labelled), "--label-column", LABEL, "--report", str(report)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["auroc"] <= 1.0 and (report / "latent.png").is_file()


def test_encode_and_interpolate_run_given_the_condition(cvae_client: TestClient):
    rows = [record("s0", 0.0), record("s3", 12.0)]
    encoded = cvae_client.post("/encode", json={"records": rows})
    assert encoded.status_code == 200, encoded.text
    assert all(len(r["mean"]) == 2 and len(r["std"]) == 2 for r in encoded.json()["results"])
    response = cvae_client.post("/interpolate", json={"records": rows, "steps": 5})
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    amounts = [point["amount"] for point in points]
    assert amounts[0] == pytest.approx(0.0, abs=1.5) and amounts[-1] == pytest.approx(12.0, abs=1.5)
    # the records carry their condition, as /sample's do: the nearer end's (the first's at t = 0.5)
    assert [point[CONTEXT] for point in points] == ["s0", "s0", "s0", "s3", "s3"]
    missing = cvae_client.post("/encode", json={"records": [{"amount": 1.0, "duration": 0.5, "noise": 0.0}]})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "records", 0, CONTEXT]


def test_score_frame_takes_the_condition_columns(cvae_model_dir: Path):
    import pandas as pd

    from vae_anomaly.training.batch_scoring import score_frame

    detector = Detector.load(cvae_model_dir, "cpu")
    rows = [record("s2", 8.0), record("s1", 8.0)]
    frame = pd.DataFrame(rows).assign(id=[10, 11])  # extra columns are ignored
    scored = score_frame(detector, frame)
    direct = detector.score(detector.kind.columns_from_records(rows)).terms.score  # type: ignore[attr-defined]
    assert scored["score"].tolist() == pytest.approx(direct.tolist())


def test_streaming_training_refuses_condition_columns(tmp_path: Path):
    import pandas as pd

    from vae_anomaly.model.errors import SchemaError
    from vae_anomaly.training.streaming import ReadOptions, fit_stream

    data = tmp_path / "train.csv"
    pd.DataFrame(training_columns(100)).to_csv(data, index=False)
    config = TrainConfig(**{**TINY, "epochs": 1}, family="cvae", condition_columns=[CONTEXT])
    with pytest.raises(SchemaError, match="not supported with --stream"):
        fit_stream(data, config, ReadOptions(), progress=False)
