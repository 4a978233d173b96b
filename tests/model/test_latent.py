"""The latent code (`FamilyNetwork.latent_code` through `Detector.encode`) and interpolation between
two codes: shapes, agreement with scoring, chunk independence, the posterior std, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from vae_anomaly.model.conditions import ConditionSpec, ConditionVariable
from vae_anomaly.model.detector import Detector, build_network
from vae_anomaly.model.errors import InputError
from vae_anomaly.model.families import FAMILIES
from vae_anomaly.model.latent import MAX_INTERPOLATION_STEPS, LatentCode, interpolate_codes, interpolation_weights
from vae_anomaly.model.scoring import ScoringConfig


def test_encode_matches_the_code_scoring_decodes_and_gives_the_posterior_std(
    mixed_detector: Detector, mixed_records: list[dict]
):
    d = mixed_detector
    columns = d.kind.columns_from_records(mixed_records[:12])
    code = d.encode(columns)
    with torch.inference_mode():
        mu, logvar = d.network.encode(d.kind.batch(columns).x_in)
    np.testing.assert_allclose(code.mean, mu.double().numpy(), rtol=1e-6)
    assert code.std is not None and code.std.shape == code.mean.shape
    np.testing.assert_allclose(code.std, torch.exp(0.5 * logvar.double()).numpy(), rtol=1e-6)
    assert np.all(code.std > 0)
    np.testing.assert_allclose(code.mean, d.terms(columns).latent_mean, rtol=1e-6, atol=1e-7)


def test_encode_does_not_depend_on_the_chunking(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    columns = d.kind.columns_from_records(mixed_records[:10])
    whole = d.encode(columns)
    original = d.manifest.scoring
    d.manifest.scoring = ScoringConfig(**{**original.model_dump(), "chunk_size": 3})
    try:
        chunked = d.encode(columns)
    finally:
        d.manifest.scoring = original
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-6, atol=1e-7)
    assert chunked.std is not None and whole.std is not None
    np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-6, atol=1e-7)


def test_encode_results_are_json_ready_in_input_order(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    results = d.encode_results(d.kind.columns_from_records(mixed_records[:3]))
    alone = d.encode_results(d.kind.columns_from_records(mixed_records[2:3]))
    assert [sorted(r) for r in results] == [["mean", "std"]] * 3
    assert all(isinstance(v, float) for v in results[0]["mean"])  # type: ignore[union-attr]
    assert results[2]["mean"] == pytest.approx(alone[0]["mean"], rel=1e-5, abs=1e-6)


def test_latent_code_concatenation_keeps_std_only_when_every_part_has_one():
    a = LatentCode(np.zeros((2, 3)), np.ones((2, 3)))
    b = LatentCode(np.ones((1, 3)), np.ones((1, 3)))
    assert LatentCode.cat([a, b]).mean.shape == (3, 3)
    assert LatentCode.cat([a, b]).std is not None
    assert LatentCode.cat([a, LatentCode(np.ones((1, 3)))]).std is None


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_gives_the_code_its_scores_decode(name: str, mixed_detector: Detector, mixed_records: list[dict]):
    """Each registered family's untrained network on the tabular kind: `latent_code` gives (B, L)
    means equal to the `latent_mean` its `score` reports, and a std (if any) of the same shape."""
    family = FAMILIES[name]
    manifest = mixed_detector.manifest
    try:
        family_config = family.config_model(latent_dim=3)
    except ValidationError as exc:
        pytest.skip(f"family {name!r} needs options beyond the latent size: {exc.errors()[0]['msg']}")
    kind, _ = build_network(manifest)
    records = mixed_records[:5]
    if family.conditional:  # a conditional family needs a kind whose inputs carry a condition
        condition = ConditionSpec(variables=[ConditionVariable(name="context", values=["a", "b"])])
        kind = type(kind)(manifest.kind_config.model_copy(update={"condition": condition}))
        records = [{**record, "context": "ab"[i % 2]} for i, record in enumerate(records)]
    torch.manual_seed(0)
    network = family.build(kind, family_config).eval()
    columns = kind.columns_from_records(records)
    batch = kind.batch(columns)
    with torch.inference_mode():
        code = network.latent_code(batch)
        # the network's code size: the latent size, or more for a family with several layers (hvae)
        terms = network.score(batch, torch.zeros(2, 1, network.latent_dim), family.default_score)
    assert code.mean.shape == (5, network.latent_dim) and code.mean.dtype == np.float64
    np.testing.assert_allclose(code.mean, terms.latent_mean, rtol=1e-5, atol=1e-6)
    if code.std is not None:
        assert code.std.shape == (5, network.latent_dim) and np.all(code.std > 0)


def test_interpolation_runs_from_the_first_code_to_the_second(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    columns = d.kind.columns_from_records(mixed_records[:2])
    code = d.encode(columns)
    path = d.interpolate(columns, 5)
    assert path.t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert path.codes.shape == (5, code.latent_dim)
    np.testing.assert_allclose(path.codes[0], code.mean[0])
    np.testing.assert_allclose(path.codes[-1], code.mean[1])
    np.testing.assert_allclose(path.codes[2], code.mean.mean(axis=0))
    assert len(path.points) == 5 and all(list(p) == d.kind.schema.names for p in path.points)
    # The ends are the reconstructions /reconstruct gives of the two inputs.
    reconstructions = d.reconstruct(columns)
    for end, reconstruction in ((path.points[0], reconstructions[0]), (path.points[-1], reconstructions[1])):
        for name, value in end.items():
            expected = reconstruction["reconstruction"][name]  # type: ignore[index]
            assert value == (pytest.approx(expected, rel=1e-4, abs=1e-4) if isinstance(value, float) else expected)


@pytest.mark.parametrize("count", [1, 3])
def test_interpolation_needs_exactly_two_inputs(mixed_detector: Detector, mixed_records: list[dict], count: int):
    d = mixed_detector
    with pytest.raises(InputError, match=f"exactly 2 inputs .*got {count} row"):
        d.interpolate(d.kind.columns_from_records(mixed_records[:count]), 4)


@pytest.mark.parametrize("steps", [1, 0, MAX_INTERPOLATION_STEPS + 1])
def test_interpolation_steps_are_bounded(steps: int):
    with pytest.raises(ValueError, match="steps must be between 2"):
        interpolation_weights(steps)


def test_interpolate_codes_is_the_straight_line():
    path = interpolate_codes(np.array([0.0, 2.0]), np.array([4.0, -2.0]), 3)
    np.testing.assert_allclose(path, [[0.0, 2.0], [2.0, 0.0], [4.0, -2.0]])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_interpolates_and_encodes_through_the_detector(
    name: str, mixed_detector: Detector, mixed_records: list[dict]
):
    """`Detector.encode_results` and `Detector.interpolate` (what `/encode` and `/interpolate` run)
    for each registered family's untrained network on the tabular kind: the path's ends are the two
    inputs' codes, and every point decodes to a record with every feature."""
    family = FAMILIES[name]
    try:
        family_config = family.config_model(latent_dim=3)
    except ValidationError as exc:
        pytest.skip(f"family {name!r} needs options beyond the latent size: {exc.errors()[0]['msg']}")
    manifest = mixed_detector.manifest
    kind, _ = build_network(manifest)
    records = mixed_records[:2]
    if family.conditional:
        condition = ConditionSpec(variables=[ConditionVariable(name="context", values=["a", "b"])])
        kind = type(kind)(manifest.kind_config.model_copy(update={"condition": condition}))
        records = [{**record, "context": "ab"[i % 2]} for i, record in enumerate(records)]
    torch.manual_seed(0)
    network = family.build(kind, family_config)
    update = {"family": name, "family_config": family_config, "kind_config": kind.config}
    detector = Detector(manifest.model_copy(update=update), kind, network, torch.device("cpu"))
    columns = kind.columns_from_records(records)
    encoded = detector.encode_results(columns)
    assert len(encoded) == 2 and all(len(r["mean"]) == network.latent_dim for r in encoded)  # type: ignore[arg-type]
    path = detector.interpolate(columns, 3)
    np.testing.assert_allclose(path.codes[[0, -1]], [r["mean"] for r in encoded], rtol=1e-6, atol=1e-7)
    assert len(path.points) == 3
    assert all(set(kind.schema.names) <= set(point) for point in path.points)
