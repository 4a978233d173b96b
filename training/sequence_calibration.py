"""Cross-fitted calibration of sequence models: every part of the training rows, scored by a model
that was fitted without it.

Why: a stream's threshold calibrated on its last rows alone (`held_out`) rests on a few windows'
worth of independent data (SKAB: 80 rows, 66 overlapping windows of 15, fewer than 6 disjoint), so
its largest score, where a 1 % target lands, is whatever that short stretch happened to hold:
a calm stretch sets it low and every later normal row alarms (SKAB, 34 files: FAR 24 % at a 1 % target), a
noisy one sets it high and misses everything. Cross-fitting cuts each series' rows into
`folds` contiguous blocks; for each block it runs the same training (`fit_sequence_detector`,
held-out calibration) on the other rows, the two sides of the gap as separate series so that no
window spans it, and scores the block's windows with that fold model. The calibration scores are
then every block's out-of-fold scores: the whole training span, each score from a model that
never saw its rows (the cross-conformal construction of Vovk, "Cross-conformal predictors", 2015;
Barber et al., "Predictive inference with the jackknife+", 2021). A fold model is fitted on fewer
rows than the served model, so its scores run a little high and the threshold errs on the side of
fewer alarms. The guarantee is the cross-conformal one, weaker than split conformal's: the scores
come from K fold models rather than the served one (Barber et al. bound the miscoverage by 2a, not
a, in the worst case), and it still assumes a stationary stream.

The served model is the one trained on the usual time-ordered train / validation split; only
its calibration scores change. Windows inside a block overlap, with the stride
`calibration_stride_for` gives the blocks, so the exchangeability caveat of `training.sequence`
applies to them as it did to the held-out windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from vae_anomaly.model.kinds.sequence.kind import SequenceInputs, SequenceKind, SequenceKindConfig
from vae_anomaly.model.kinds.sequence.windows import gather_windows
from vae_anomaly.training.data import DataError
from vae_anomaly.training.sequence_data import pair_starts
from vae_anomaly.training.trainer import TrainConfig, TrainResult, calibrated_fields

logger = logging.getLogger(__name__)

Fitter = Callable[[np.ndarray, TrainConfig, np.ndarray], TrainResult]
"""(rows (N, C), config, segment bounds) → a trained sequence detector."""


def fold_blocks(bounds: np.ndarray, folds: int) -> list[np.ndarray]:
    """For each fold, the (start, end) pairs of its block in every series: the j-th of `folds`
    contiguous, near-equal parts of each series (rows of one series may be fewer than `folds`)."""
    blocks: list[list[int]] = [[] for _ in range(folds)]
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        edges = np.linspace(start, end, folds + 1).round().astype(int).tolist()
        for j in range(folds):
            blocks[j].extend([edges[j], edges[j + 1]])
    return [np.array(b, dtype=np.int64).reshape(-1, 2) for b in blocks]


def without_block(values: np.ndarray, bounds: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows outside `block` (pairs, one per series) and their segment bounds: each series
    becomes the part before its block and the part after it, so a window never spans the gap."""
    parts, lengths = [], []
    for (start, end), (lo, hi) in zip(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True), block.tolist(),
                                      strict=True):  # fmt: skip
        for a, b in ((start, lo), (hi, end)):
            if b > a:
                parts.append(values[a:b])
                lengths.append(b - a)
    kept = np.concatenate(parts) if parts else values[:0]
    return kept, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def cross_fitted_scores(
    values: np.ndarray, bounds: np.ndarray, config: TrainConfig, folds: int, stride: int, window: int, fit: Fitter
) -> np.ndarray:
    """Out-of-fold scores of the windows (every `stride` steps) inside each fold's block, each
    block scored by a detector `fit` on the rows outside it with `config`."""
    scores = []
    for block in fold_blocks(bounds, folds):
        starts = pair_starts(block, window, stride)
        if len(starts) == 0:
            continue
        kept, kept_bounds = without_block(values, bounds, block)
        detector = fit(kept, config, kept_bounds).detector
        inputs = SequenceInputs(gather_windows(values, starts, window), starts + window - 1)
        scores.append(detector.terms(inputs).score)
    if not scores:
        raise DataError(f"no fold block holds a window of {window} rows")
    return np.concatenate(scores)


def cross_fit_calibration(
    result: TrainResult,
    values: np.ndarray,
    bounds: np.ndarray,
    config: TrainConfig,
    folds: int,
    stride: int,
    fit: Fitter,
    version: str | None,
) -> TrainResult:
    """`result` with its thresholds and calibration scores replaced by cross-fitted ones (see the
    module docstring); `result` itself when the rows are too few for the fold fits (logged, and
    the manifest keeps `calibration: held_out`)."""
    detector = result.detector
    kind = detector.kind
    assert isinstance(kind, SequenceKind)
    best = int(result.summary["best_epoch"])
    # The served model's best epoch says how long this stream trains; a fold need not search further.
    fold_config = config.model_copy(
        update={
            "epochs": min(config.epochs, best + 1),
            "kind_options": {**config.kind_options, "calibration": "held_out"},
        }
    )
    started = time.perf_counter()
    try:
        scores = cross_fitted_scores(values, bounds, fold_config, folds, stride, kind.window, fit)
    except DataError as exc:
        logger.warning("cross-fitted calibration skipped (%s); calibrated on the held-out last rows", exc)
        return result
    fields = calibrated_fields(scores, config, version, len(scores))
    kind_config = SequenceKindConfig.model_validate(
        {**kind.config.model_dump(), "calibration": "cross_fit", "calibration_folds": folds,
         "calibration_stride": stride}
    )  # fmt: skip
    summary = {
        **result.summary,
        "rows": {**result.summary["rows"], "calibration": len(scores)},
        "wall_seconds": round(result.summary["wall_seconds"] + time.perf_counter() - started, 3),
        "calibration_fold_fits": folds,
    }
    manifest = detector.manifest.model_copy(
        update={
            "thresholds": fields["thresholds"],
            "active_threshold": fields["active_threshold"],
            "calibration_scores": fields["calibration_scores"],
            "kind_config": kind_config,
            "training": summary,
        }
    )
    served = type(detector)(manifest, SequenceKind(kind_config), detector.network, detector.device)
    return TrainResult(detector=served, summary=summary, world=result.world)
