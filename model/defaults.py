"""Names and defaults of the model's options that need neither torch nor numpy: the score methods
and the default threshold targets. They live apart from `model.scoring` and `model.thresholds`
(which re-export them) so that `vae-anomaly train --help` can show them without loading the math
stack (tests/training/test_cli.py checks which modules `--help` loads).
"""

from __future__ import annotations

from typing import Literal, get_args

ScoreMethod = Literal["elbo", "iwae", "reconstruction", "joint"]
SCORE_METHODS: tuple[ScoreMethod, ...] = get_args(ScoreMethod)

DEFAULT_TARGETS = {"warn": 0.01, "critical": 0.001}
"""Threshold name → target false-positive rate, when training is given no `--threshold`."""
