"""bench.skab_folds: two disjoint folds that together hold each of SKAB's 34 files once, with every
folder in both folds, matching the files bench.sequences finds when the data is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sequences import skab_files
from bench.skab_folds import FOLDS, main

SKAB = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "skab"


def test_folds_partition_the_34_files_and_share_every_folder():
    a, b = set(FOLDS["A"]), set(FOLDS["B"])
    assert len(a) == len(b) == 17 and not a & b
    assert len(a | b) == 34
    for folder in ("valve1", "valve2", "other"):
        assert any(f.startswith(folder + "/") for f in a) and any(f.startswith(folder + "/") for f in b)


@pytest.mark.skipif(not SKAB.is_dir(), reason="SKAB not present")
def test_folds_name_the_files_the_benchmark_reads():
    found = {f"{p.parent.name}/{p.stem}" for p in skab_files(SKAB, None)}
    assert found == set(FOLDS["A"]) | set(FOLDS["B"])


def test_command_line_prints_a_fold(capsys):
    assert main(["B"]) == 0
    assert capsys.readouterr().out.split() == FOLDS["B"]
    assert main(["C"]) == 2
