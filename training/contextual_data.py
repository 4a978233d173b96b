"""A generator of contextual anomalies: values that are normal in one context and anomalous in another.

Each row has a context column `segment` (K values "s0" … "s{K-1}", equally likely) and features:

- `amount` ~ N(4 k, 1) for segment k (the segments' typical amounts are 0, 4, 8, …);
- `duration` = 0.5 · amount + N(0, 0.5²): tied to the amount in every segment;
- `noise` ~ N(0, 1): independent of everything, in every segment.

A contextual anomaly is a row of segment k whose `amount` and `duration` are drawn as in another
segment j ≠ k: every value in it is common in the data as a whole (it is a normal row of segment j),
only its combination with the segment is rare. A model of the features alone (an unconditional VAE
that ignores the segment) sees nothing unusual; a model of the features *given* the segment (the
CVAE with `--condition-columns segment`) sees an amount four or more standard deviations from its
segment's. The `label` column is 1 for anomalies, 0 for normal rows. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

CONTEXT = "segment"
LABEL = "label"
FEATURES = ("amount", "duration", "noise")
SEGMENT_SPACING = 4.0
"""Distance between neighbouring segments' mean amounts, in the amount's within-segment std."""


def contextual_columns(n_normal: int, n_anomalous: int = 0, segments: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns `segment`, `amount`, `duration`, `noise`, `label` (see the module docstring); rows
    shuffled, anomalies (label 1) last before the shuffle."""
    if segments < 2:
        raise ValueError("contextual anomalies need at least 2 segments")
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalous
    segment = rng.integers(0, segments, n)
    drawn_as = segment.copy()  # the segment whose distribution the amount is drawn from
    shift = rng.integers(1, segments, n_anomalous)  # another segment, never the row's own
    drawn_as[n_normal:] = (segment[n_normal:] + shift) % segments
    amount = rng.normal(SEGMENT_SPACING * drawn_as, 1.0)
    duration = 0.5 * amount + rng.normal(0.0, 0.5, n)
    noise = rng.normal(0.0, 1.0, n)
    label = np.r_[np.zeros(n_normal, dtype=np.int64), np.ones(n_anomalous, dtype=np.int64)]
    order = rng.permutation(n)
    names = np.array([f"s{k}" for k in range(segments)], dtype=object)
    return {
        CONTEXT: names[segment][order],
        "amount": amount[order],
        "duration": duration[order],
        "noise": noise[order],
        LABEL: label[order],
    }
