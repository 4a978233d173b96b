"""The fixed 2-fold split of SKAB's 34 files that every sequence-default experiment uses.

Written down on 2026-12-02 before any experiment of this split ran, by a rule that does not look at
results (nor at labels, anomaly types or file sizes): within each folder (valve1, valve2, other),
take the files in numeric order and deal them alternately, so each fold holds files of every rig
configuration and of both halves of each folder's recording sessions. A sequence default is chosen
on one fold and kept only if it also wins on the other (3 seeds each), as `bench.folds` does for the
tabular sets. Nothing anywhere switches on a file's name; these names only pick files of the
benchmark.

    python -m bench.sequences --files $(python -m bench.skab_folds A) ...
"""

from __future__ import annotations

import sys

from bench.folds import print_fold

FILES: dict[str, list[int]] = {
    "valve1": list(range(16)),
    "valve2": list(range(4)),
    "other": list(range(1, 15)),
}
"""SKAB's files with anomalies, per folder, in numeric order (`bench.sequences.skab_files`)."""

FOLDS: dict[str, list[str]] = {
    fold: [f"{folder}/{n}" for folder, numbers in FILES.items() for n in numbers[offset::2]]
    for fold, offset in (("A", 0), ("B", 1))
}
"""A: valve1/0 2 4 … 14, valve2/0 2, other/1 3 … 13 (17 files).
B: valve1/1 3 5 … 15, valve2/1 3, other/2 4 … 14 (17 files)."""


def main(argv: list[str]) -> int:
    return print_fold(FOLDS, argv, "bench.skab_folds")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
