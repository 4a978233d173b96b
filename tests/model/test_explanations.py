"""Masked-feature explanations (`model.kinds.tabular.explanations`): a feature's contribution is the
fall of the record's score when that feature alone is missing, its `expected` value what the rest of
the record predicts for it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vae_anomaly.model.detector import Detector
from vae_anomaly.model.kinds.tabular import explanations
from vae_anomaly.model.kinds.tabular.explanations import explain_masked, hide_features


def _explain(d: Detector, records: list[dict]) -> explanations.MaskedExplanation:
    columns = d.kind.columns_from_records(records)
    return explain_masked(d.kind.codec, d.kind.owners, d.kind.batch(columns), d.kind.missing(columns), d.rescore)


def test_shapes_and_missing_cells_contribute_zero(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    records = [mixed_records[0], {**mixed_records[1], "a": None, "color": None}]
    masked = _explain(d, records)
    assert masked.contributions.shape == (2, 5) and masked.contributions.dtype == np.float64
    assert np.isfinite(masked.contributions).all()
    assert masked.contributions[1, 0] == 0.0 and masked.contributions[1, 3] == 0.0
    assert (masked.contributions[0] != 0.0).all()
    assert masked.expected.numeric_mean.shape == (2, 3)
    assert [logits.shape for logits in masked.expected.category_logits] == [(2, 3)]
    assert masked.expected.boolean_logits.shape == (2, 1)


def test_hiding_a_feature_is_exactly_sending_it_as_missing(mixed_detector: Detector, mixed_records: list[dict]):
    """contribution_f = s(x) - s(x with f null), s the score at the posterior mean: the tensor-level
    mask must encode the record as the codec encodes a null cell, for every type."""
    d = mixed_detector
    record = mixed_records[4]
    names = d.kind.schema.names
    variants = [record] + [{**record, name: None} for name in names]
    scores = d.rescore(d.kind.batch(d.kind.columns_from_records(variants))).score
    masked = _explain(d, [record])
    np.testing.assert_allclose(masked.contributions[0], scores[0] - scores[1:], rtol=1e-5, atol=1e-5)
    for j, name in enumerate(names):
        gappy = d.kind.batch(d.kind.columns_from_records([{**record, name: None}]))
        hidden = torch.zeros((1, len(names)), dtype=torch.bool)
        hidden[0, j] = True
        hid = hide_features(d.kind.codec, d.kind.owners, d.kind.batch(d.kind.columns_from_records([record])), hidden)
        for field in ("x_in", "numeric_mask", "categorical_mask", "boolean_mask", "unseen"):
            assert torch.equal(getattr(hid, field), getattr(gappy, field)), (name, field)


def test_expected_is_the_reconstruction_with_the_feature_missing(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    record = {**mixed_records[6], "a": 1000.0}
    (result,) = d.score_results(d.kind.columns_from_records([record]), explain=5)
    for top in result["top_features"]:
        (alone,) = d.reconstruct(d.kind.columns_from_records([{**record, top["feature"]: None}]))
        assert top["expected"] == pytest.approx(alone["reconstruction"][top["feature"]])


def test_a_pushed_feature_is_named_first_and_ranks_by_contribution(mixed_detector: Detector, mixed_records: list[dict]):
    d = mixed_detector
    records = [{**r, "b": r["b"] + 40 * 6.0} for r in mixed_records[:30]]
    scored = d.score(d.kind.columns_from_records(records))
    masked = _explain(d, records)
    for i, result in enumerate(d.results(scored, 3)):
        tops = result["top_features"]
        assert tops[0]["feature"] == "b"
        assert [t["contribution"] for t in tops] == pytest.approx(sorted(masked.contributions[i], reverse=True)[:3])


def test_explanations_do_not_depend_on_the_batch(
    mixed_detector: Detector, mixed_records: list[dict], monkeypatch: pytest.MonkeyPatch
):
    d = mixed_detector
    records = mixed_records[:13]
    together = d.score_results(d.kind.columns_from_records(records), explain=5)
    monkeypatch.setattr(explanations, "VARIANT_ROWS", 7)  # one record per pass
    alone = [d.score_results(d.kind.columns_from_records([r]), explain=5)[0] for r in records]
    for got, single in zip(together, alone, strict=True):
        assert [t["feature"] for t in got["top_features"]] == [t["feature"] for t in single["top_features"]]
        for a, b in zip(got["top_features"], single["top_features"], strict=True):
            assert a["contribution"] == pytest.approx(b["contribution"], rel=1e-4, abs=1e-5)
            if isinstance(b["expected"], float):
                assert a["expected"] == pytest.approx(b["expected"], rel=1e-4)
            else:
                assert a["expected"] == b["expected"]


def test_without_rescore_the_per_feature_likelihood_terms_rank(mixed_detector: Detector, mixed_records: list[dict]):
    """A hand-built `ScoreBatch` (no network to rescore with) keeps the -log p(x_f | z = mu) ranking."""
    d = mixed_detector
    scored = d.score(d.kind.columns_from_records(mixed_records[:5]))
    plain = d.results(dataclasses.replace(scored, rescore=None), 5)
    for i, result in enumerate(plain):
        got = [t["contribution"] for t in result["top_features"]]
        assert got == pytest.approx(sorted(scored.terms.contributions[i], reverse=True))
