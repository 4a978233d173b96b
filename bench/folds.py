"""The fixed 2-fold split of the 18 ADBench data sets that every default-changing experiment uses.

Written down before any experiment of issue 10 ran, by a rule that does not look at results: sort
the data sets by row count and deal them alternately, so each fold holds small and large, narrow and
wide sets. A change is chosen on one fold and must also win on the other (3 seeds each) to be kept;
then the roles swap. Nothing anywhere switches on a data set's name; these names only pick rows of
the benchmark.

    python -m bench.detection --datasets $(python -m bench.folds A) ...
"""

from __future__ import annotations

import sys

ROWS = {
    "Ionosphere": 351,
    "WDBC": 367,
    "Pima": 768,
    "vowels": 1456,
    "yeast": 1484,
    "cardio": 1831,
    "fault": 1941,
    "Cardiotocography": 2114,
    "thyroid": 3772,
    "Wilt": 4819,
    "PageBlocks": 5393,
    "satellite": 6435,
    "pendigits": 6870,
    "annthyroid": 7200,
    "mammography": 11183,
    "magic.gamma": 19020,
    "shuttle": 49097,
    "smtp": 95156,
}

_BY_ROWS = sorted(ROWS, key=ROWS.__getitem__)
FOLDS: dict[str, list[str]] = {"A": _BY_ROWS[0::2], "B": _BY_ROWS[1::2]}
"""A: Ionosphere, Pima, yeast, fault, thyroid, PageBlocks, pendigits, mammography, shuttle.
B: WDBC, vowels, cardio, Cardiotocography, Wilt, satellite, annthyroid, magic.gamma, smtp."""


def print_fold(folds: dict[str, list[str]], argv: list[str], program: str) -> int:
    """`python -m <program> A|B`: print one fold's members on one line, for `$(...)` in a shell."""
    if len(argv) != 1 or argv[0] not in folds:
        print(f"usage: python -m {program} {'|'.join(folds)}", file=sys.stderr)
        return 2
    print(" ".join(folds[argv[0]]))
    return 0


def main(argv: list[str]) -> int:
    return print_fold(FOLDS, argv, "bench.folds")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
