"""A Python API for notebooks and scripts: `Detector.fit(frame)` → `.score(frame)` → `.save(dir)`,
`Detector.load(dir)`, on pandas DataFrames of tabular data.

It wraps exactly what the command line runs: `training.tabular.fit_detector` to train (schema
inference, 70/10/20 split, early stopping, calibration) and `training.batch_scoring.score_frame`
to score (the one scoring path, as `/score` and `vae-anomaly score`), so a model trained here
serves unchanged with `vae-anomaly serve DIR`, and the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_anomaly.model.detector import Detector as LoadedDetector
from vae_anomaly.model.thresholds import DEFAULT_TARGETS
from vae_anomaly.training.batch_scoring import score_frame
from vae_anomaly.training.data import DataError, frame_columns, normal_mask, suspicious_columns
from vae_anomaly.training.tabular import fit_detector
from vae_anomaly.training.trainer import TrainConfig

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


class Detector:
    """A trained tabular anomaly detector. Build one with `Detector.fit(frame)` or `Detector.load(dir)`.

    `score(frame)` returns one row per input row (same index): `score` (higher = more anomalous),
    `elbo`, `reconstruction_error`, `p_value`, `is_anomaly` (the active threshold), the thresholds
    exceeded and missing features (';'-joined) and `top_features` (JSON text), as the CLI's CSV.
    """

    def __init__(self, loaded: LoadedDetector):
        self.loaded = loaded  # the model-level detector (`model.detector.Detector`) behind this API

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        *,
        label_column: str | None = None,
        normal_value: object = None,
        drop_columns: Sequence[str] = (),
        thresholds: dict[str, float] | None = None,
        progress: bool = False,
        **options: Any,
    ) -> Detector:
        """Train on the normal rows of `frame`. With `label_column`, only rows whose label equals
        `normal_value` (default 0) train the model and the label is never a feature; `drop_columns`
        (ids, timestamps, ...) are left out. `options` are `TrainConfig` fields (`epochs`, `seed`,
        `latent_dim`, `family`, ...). Warns (logging) about columns that look like labels or ids."""
        unknown = [name for name in [*drop_columns, *([label_column] if label_column else [])] if name not in frame]
        if unknown:
            raise DataError(f"columns not in the frame: {', '.join(map(str, unknown))}")
        features = frame.drop(columns=[*drop_columns, *([label_column] if label_column else [])])
        if label_column is not None:
            keep = normal_mask(frame[label_column].to_numpy(), None if normal_value is None else str(normal_value))
            features = features[keep]
        columns = frame_columns(features)
        for name, reason in suspicious_columns(columns).items():
            logger.warning("column %r looks like a label or an id (%s): label_column or drop_columns?", name, reason)
        config = TrainConfig(thresholds={**DEFAULT_TARGETS, **(thresholds or {})}, **options)
        return cls(fit_detector(columns, config, progress=progress).detector)

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Detector:
        """Load an artifact directory written by `save` or `vae-anomaly train`."""
        loaded = LoadedDetector.load(Path(directory), device)
        if loaded.kind.name != "tabular":
            raise DataError(f"{directory}: a {loaded.kind.name} model; this API scores tables (use the CLI)")
        return cls(loaded)

    def save(self, directory: str | Path) -> str:
        """Write the artifact (manifest.json + weights.safetensors); returns the model id."""
        return self.loaded.save(Path(directory)).model_id

    def score(self, frame: pd.DataFrame, explain: int = 3, id_column: str | None = None) -> pd.DataFrame:
        """Score every row (extra columns are ignored; `id_column` is copied first as `id`)."""
        return score_frame(self.loaded, frame, explain, id_column)

    @property
    def thresholds(self) -> dict[str, float]:
        """Threshold name → score value; `is_anomaly` uses `active_threshold`."""
        return {name: t.value for name, t in self.loaded.thresholds.thresholds.items()}

    @property
    def active_threshold(self) -> str:
        return self.loaded.thresholds.active

    @property
    def model_id(self) -> str:
        return self.loaded.manifest.model_id

    @property
    def features(self) -> list[str]:
        return list(self.loaded.kind.schema.names)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Detector(model_id={self.model_id!r}, features={len(self.features)}, active={self.active_threshold!r})"


__all__ = ["Detector"]
