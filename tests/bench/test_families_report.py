"""bench.families' tables: means over the (data set, seed) pairs every family finished, ranks per
data set with a failed fit ranked last, and the VAE-vs-AE line."""

from __future__ import annotations

import pytest

from bench.families import markdown, summarise


def record(dataset: str, seed: int, family: str, auroc: float | None, fit: float = 1.0) -> dict[str, object]:
    if auroc is None:
        return {"dataset": dataset, "seed": seed, "family": family, "error": "RuntimeError: boom"}
    return {"dataset": dataset, "seed": seed, "family": family, "auroc": auroc, "auprc": auroc / 2, "fit_seconds": fit}


RECORDS = [
    record("a", 0, "vae", 0.9, fit=2.0),
    record("a", 0, "ae", 0.7, fit=4.0),
    record("b", 0, "vae", 0.6),
    record("b", 0, "ae", None),  # failed: ranks last on b, left out of the means
    record("c", 0, "vae", 0.99),  # c: ae never ran, so c is left out for both
]


def test_summary_uses_only_pairs_every_family_finished():
    families, summary, auroc, coverage = summarise(RECORDS)
    assert families == ["vae", "ae"]
    assert list(auroc) == ["a", "b"] and coverage.startswith("2 data sets")
    assert summary["vae"]["auroc"] == pytest.approx(0.75) and summary["vae"]["rank"] == 1.0
    assert summary["ae"]["auroc"] == pytest.approx(0.7) and summary["ae"]["rank"] == 2.0
    assert summary["ae"]["failed"] == 1 and summary["ae"]["fit"] == 4.0


def test_markdown_names_where_the_vae_beats_the_ae():
    text = markdown("t", RECORDS)
    assert "| `vae` | 0.750 |" in text
    assert "VAE better by > 0.01 on a (+0.200)" in text
