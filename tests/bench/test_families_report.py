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


def write_sets(directory, sizes: dict[str, int]) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for name, rows in sizes.items():
        y = np.zeros(rows, dtype=np.int64)
        y[:5] = 1
        np.savez(directory / f"{name}.npz", X=rng.normal(size=(rows, 3)), y=y)


def test_tabular_tasks_run_every_seed_of_a_set_before_the_next_smallest_first(tmp_path):
    from bench.families import tabular_tasks

    write_sets(tmp_path, {"1_big": 60, "2_small": 30})
    by_set = [(d, s) for d, s, _ in tabular_tasks(tmp_path, [0, 1], None)]
    assert by_set == [("small", 0), ("small", 1), ("big", 0), ("big", 1)]
    by_seed = [(d, s) for d, s, _ in tabular_tasks(tmp_path, [0, 1], None, order="seed")]
    assert by_seed == [("small", 0), ("big", 0), ("small", 1), ("big", 1)]


def test_a_resumed_run_skips_what_the_file_holds_and_keeps_the_earlier_meta(tmp_path):
    import json

    import numpy as np

    from bench.detection import Outcome, Split
    from bench.families import run

    calls: list[tuple[str, int]] = []

    def task(name: str, seed: int):
        y = np.array([0, 0, 1, 1])
        return name, seed, lambda: Split(np.zeros((4, 1)), np.zeros((4, 1)), y, 4)

    def runner(split, seed, overrides):
        calls.append((overrides["family"], seed))
        return Outcome(np.array([0.1, 0.2, 0.9, 0.8]), 1.0, 0.1, {})

    out = tmp_path / "r.json"
    run(iter([task("a", 0)]), ["vae"], runner, out, {"command": "first"}, resume=False)
    run(iter([task("a", 0), task("a", 1)]), ["vae", "ae"], runner, out, {"command": "second"}, resume=True)
    assert calls == [("vae", 0), ("ae", 0), ("vae", 1), ("ae", 1)]
    payload = json.loads(out.read_text())
    assert len(payload["records"]) == 4 and payload["meta"]["command"] == "second"
    assert [m["command"] for m in payload["meta"]["previous_runs"]] == ["first"]


def test_the_per_seed_table_calls_a_winner_only_on_a_consistent_sign():
    records = [
        record("p", 0, "vae", 0.80), record("p", 0, "ae", 0.70),
        record("p", 1, "vae", 0.82), record("p", 1, "ae", 0.75),
        record("q", 0, "vae", 0.60), record("q", 0, "ae", 0.70),
        record("q", 1, "vae", 0.90), record("q", 1, "ae", 0.70),
    ]  # fmt: skip
    text = markdown("t", records, {"command": "x", "started": "now", "environment": {"torch": "2"}})
    assert "| p | +0.085 | +0.100, +0.070 | VAE |" in text
    assert "| q | +0.050 | -0.100, +0.200 | – |" in text
    assert "Coverage: 2 data sets × seeds 0, 1 (4 pairs): p (0, 1), q (0, 1)" in text and "`x` started now" in text
