"""The sequence kind: fixed-length windows of multivariate sensor streams.

Codec: a JSON series (`{"series": {"columns": [...], "data": [[...], ...]}, "timestamps"?: [...]}`,
oldest row first) or a file's rows → the windows that close at each row (`windows`) →
`SequenceBatch` (standardised values and an observation mask, (B, T, C)); backbone: recurrent
(VRAE) or 1-D convolutional (`backbone`); likelihood: one Gaussian term per (time step, sensor)
(`likelihood`). Results carry `top_sensors`: the sensors with the largest share of the window's
reconstruction error and the step where each was worst, so a score says which sensor, when.

Stateless serving: a request carries the recent history; the first `window - 1` rows only fill the
first window and get no result of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vae_anomaly.model.conditions import ConditionSpec
from vae_anomaly.model.errors import InputError, InputIssue
from vae_anomaly.model.kinds.base import Corruption, InputLimits, envelope_schema
from vae_anomaly.model.kinds.sequence.backbone import (
    SequenceBackboneConfig,
    SequenceDecoderOutput,
    build_sequence_backbone,
)
from vae_anomaly.model.kinds.sequence.likelihood import element_log_probs
from vae_anomaly.model.kinds.sequence.preprocessing import SensorScaling, window_levels
from vae_anomaly.model.kinds.sequence.requests import SequenceScoreRequest
from vae_anomaly.model.kinds.sequence.windows import closing_windows, gather_windows, require_rows, segment_bounds
from vae_anomaly.model.scoring import ScoreBatch, ScoreTerms, result_fields


class SequenceKindConfig(BaseModel):
    """The sequence manifest section: sensor scaling, the backbone (window, sensors, sizes), and
    the stride the calibration windows were cut with (see docs/ARCHITECTURE.md, exchangeability)."""

    model_config = ConfigDict(extra="forbid")

    scaling: SensorScaling
    network: SequenceBackboneConfig
    stride: int = Field(ge=1)
    calibration_stride: int = Field(ge=1)
    time_column: str | None = None
    series_column: str | None = None
    relative_sensors: list[str] = Field(
        default_factory=list, description="sensors modelled relative to their window's own mean level"
    )
    sensor_dof: int | None = Field(
        default=None, ge=1, description="Student-t degrees of freedom of every sensor; None: Gaussian"
    )
    calibration: Literal["held_out", "cross_fit"] = Field(
        default="held_out",
        description="where the calibration scores came from: the last rows of each series (held_out) or "
        "every block of the training rows scored by a model fitted without it (cross_fit)",
    )
    calibration_folds: int | None = Field(default=None, ge=2, description="blocks of a cross_fit calibration")


class SequenceOptions(BaseModel):
    """Training options of sequence models."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(default=15, ge=2, description="time steps per window")
    stride: int = Field(default=1, ge=1, description="steps between training windows")
    calibration_stride: int | None = Field(
        default=None, ge=1, description="steps between calibration windows (default: calibration_stride_for)"
    )
    architecture: Literal["recurrent", "conv"] = Field(default="conv", description="sequence backbone")
    cell: Literal["gru", "lstm"] = Field(default="gru", description="recurrent cell of recurrent sequence models")
    hidden_size: int = Field(default=64, ge=1, description="recurrent state size of sequence models")
    sensor_logvar_min: float = Field(default=-4.6, le=0.0, description="floor of a sensor's log-variance")
    sensor_likelihood: Literal["gaussian", "student_t"] = Field(
        default="student_t", description="distribution of a sensor reading given the code"
    )
    sensor_dof: int = Field(default=4, ge=1, description="degrees of freedom of the student_t sensor likelihood")
    level: Literal["absolute", "auto", "relative"] = Field(
        default="auto",
        description="sensor levels: absolute; relative to each window's mean for every sensor; or auto, "
        "relative for the slow sensors whose level drifts between training windows",
    )
    calibration: Literal["held_out", "cross_fit"] = Field(
        default="cross_fit",
        description="calibration scores: the last rows of each series scored by the model (held_out), or every "
        "block of the training rows scored by a model fitted without it (cross_fit: `calibration_folds` more fits)",
    )
    calibration_folds: int = Field(default=5, ge=2, le=20, description="blocks of the cross_fit calibration")


@dataclass
class SequenceBatch:
    """x (B, T, C) standardised values (0 where missing), mask (B, T, C) observed."""

    x: torch.Tensor
    mask: torch.Tensor

    @property
    def x_in(self) -> torch.Tensor:
        return self.x

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(self.x.to(device), self.mask.to(device))

    def slice(self, start: int, stop: int) -> SequenceBatch:
        return SequenceBatch(self.x[start:stop], self.mask[start:stop])

    def select(self, index: torch.Tensor) -> SequenceBatch:
        return SequenceBatch(self.x[index], self.mask[index])


@dataclass
class SequenceInputs:
    """Checked windows (n, T, C) in sensor units (NaN = missing), the row each closes (n,) within
    its request or file, and that row's timestamp when one was sent."""

    windows: np.ndarray
    rows: np.ndarray
    timestamps: list[Any] | None = None

    def __len__(self) -> int:
        return int(self.windows.shape[0])


def _issue(loc: tuple[str | int, ...], msg: str, kind: str) -> InputError:
    return InputError([InputIssue(loc, msg, kind)])


class SequenceKind:
    """Windows of one sensor layout and length; see the module docstring."""

    name: ClassVar[str] = "sequence"
    config_model: ClassVar[type[BaseModel]] = SequenceKindConfig
    options_model: ClassVar[type[BaseModel]] = SequenceOptions
    request_models: ClassVar[tuple[type[BaseModel], ...]] = (SequenceScoreRequest,)
    input_fields: ClassVar[tuple[str, ...]] = ("series",)
    batch_fields: ClassVar[tuple[str, ...]] = ()
    expected_input: ClassVar[str] = "a sequence model: send 'series' ({'columns': [...], 'data': [[...], ...]})"
    explanation_field: ClassVar[str] = "top_sensors"
    micro_batch: ClassVar[bool] = False
    result_unit: ClassVar[str] = "window"

    def __init__(self, config: SequenceKindConfig):
        self.config = config
        self.network = config.network
        self.scaling = config.scaling
        self.sensors = config.scaling.sensors
        self.window = config.network.window
        self.relative = np.array([s in config.relative_sensors for s in self.sensors], dtype=bool)

    def default_latent_dim(self) -> int:
        return int(min(16, max(4, self.network.sensors)))

    def condition_spec(self) -> ConditionSpec | None:
        return None  # windows carry no condition (yet): conditional families refuse sequence models

    # -- backbone and likelihood -------------------------------------------------------------------

    def build_encoder(self) -> nn.Module:
        return build_sequence_backbone(self.network, 1)[0]

    def feature_dim(self) -> int:
        return self.network.feature_dim

    def build_decoder(self, latent_dim: int) -> nn.Module:
        return build_sequence_backbone(self.network, latent_dim)[1]

    def log_likelihood(self, decoded: SequenceDecoderOutput, batch: SequenceBatch) -> torch.Tensor:
        return element_log_probs(decoded, batch.x, batch.mask, self.config.sensor_dof)

    def corrupt(self, batch: SequenceBatch, corruption: Corruption, generator: torch.Generator) -> SequenceBatch:
        """Masking hides a share of (step, sensor) readings from the encoder; Gaussian adds noise."""
        x = batch.x
        if corruption.kind == "masking":
            keep = (torch.rand(x.shape, generator=generator) >= corruption.rate).to(x.device)
            return SequenceBatch(x * keep.float(), batch.mask)
        return SequenceBatch(x + torch.randn(x.shape, generator=generator).to(x.device) * corruption.rate, batch.mask)

    # -- codec ---------------------------------------------------------------------------------------

    def standardize(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows (n, T, C) in sensor units → (model values, observed mask, removed levels (n, C)).

        Relative sensors lose their window's mean level (a drifting level that training could not
        pin down); the levels are 0 for the other sensors and are added back by `reconstruct`.
        """
        z, mask = self.scaling.standardize(windows)
        levels = np.zeros((len(windows), len(self.sensors)))
        if self.relative.any():
            levels[:, self.relative] = window_levels(z[..., self.relative], mask[..., self.relative])
            z = np.where(mask, z - levels[:, None, :], 0.0)
        return z, mask, levels

    def batch(self, inputs: SequenceInputs) -> SequenceBatch:
        z, mask, _ = self.standardize(inputs.windows)
        return SequenceBatch(torch.from_numpy(z).float(), torch.from_numpy(mask))

    def count(self, inputs: SequenceInputs) -> int:
        return len(inputs)

    def concat(self, parts: Sequence[SequenceInputs]) -> SequenceInputs:
        return SequenceInputs(np.concatenate([p.windows for p in parts]), np.concatenate([p.rows for p in parts]), None)

    def missing(self, inputs: SequenceInputs) -> np.ndarray:
        return ~np.isfinite(inputs.windows.reshape(len(inputs), -1))

    def inputs_from_rows(self, values: np.ndarray, bounds: np.ndarray | None = None) -> SequenceInputs:
        """Rows (N, C) in the model's sensor order, time-ordered per series (`segment_bounds`) →
        the windows closing at every row that closes one."""
        bounds = segment_bounds(None, len(values)) if bounds is None else bounds
        starts, rows = closing_windows(bounds, self.window)
        return SequenceInputs(gather_windows(values, starts, self.window), rows)

    def parse_request(self, data: dict[str, Any]) -> SequenceScoreRequest:
        return SequenceScoreRequest.model_validate(data)

    def request_inputs(self, body: SequenceScoreRequest, limits: InputLimits) -> SequenceInputs:
        """Check the columns (every sensor exactly once, no other), the values (numbers or null),
        the length (at least one window) and the timestamps (one per row, strictly increasing)."""
        columns = body.series.columns
        unknown = [c for c in columns if c not in self.sensors]
        if unknown:
            raise _issue(("series", "columns"), f"unknown column {unknown[0]!r}; the model's sensors: "
                         f"{', '.join(self.sensors)}", "unknown_column")  # fmt: skip
        absent = [s for s in self.sensors if s not in columns]
        if absent:
            raise _issue(("series", "columns"), f"sensor {absent[0]!r} is missing", "missing_column")
        if len(set(columns)) != len(columns):
            raise _issue(("series", "columns"), "a column appears twice", "duplicate_column")
        data = body.series.data
        require_rows(len(data), self.window)
        order = [columns.index(s) for s in self.sensors]
        values = np.empty((len(data), len(self.sensors)), dtype=np.float64)
        for i, row in enumerate(data):
            if len(row) != len(columns):
                raise _issue(("series", "data", i), f"{len(row)} values for {len(columns)} columns", "row_length")
            for j, k in enumerate(order):
                value = row[k]
                values[i, j] = np.nan if value is None else value
        timestamps = body.timestamps
        if timestamps is not None:
            if len(timestamps) != len(data):
                raise _issue(("timestamps",), f"{len(timestamps)} timestamps for {len(data)} rows", "length")
            for i in range(1, len(timestamps)):
                if not _before(timestamps[i - 1], timestamps[i]):
                    raise _issue(("timestamps", i), f"{timestamps[i]!r} does not come after {timestamps[i - 1]!r}; "
                                 "send rows oldest first", "unordered")  # fmt: skip
        inputs = self.inputs_from_rows(values)
        if timestamps is not None:
            inputs.timestamps = [timestamps[r] for r in inputs.rows.tolist()]
        return inputs

    def input_signature(self) -> object:
        return (tuple(self.sensors), self.window)

    def request_schema(self) -> dict[str, Any]:
        """The series envelope as it is (its column names are the sensors of `GET /model`)."""
        return envelope_schema(self.request_models)

    def example_body(self, n: int) -> dict[str, Any]:
        """A series of `window + n - 1` rows of zeros (n windows) under the model's sensors."""
        rows = [[0.0] * len(self.sensors) for _ in range(self.window + n - 1)]
        return {"series": {"columns": list(self.sensors), "data": rows}}

    def describe(self) -> dict[str, object]:
        return {"sensors": list(self.sensors), "window": self.window, "network": self.network.model_dump(mode="json")}

    # -- rendering -----------------------------------------------------------------------------------

    def sensor_errors(self, terms: ScoreTerms) -> np.ndarray:
        """(B, T, C): -log p(x_tc | z = mu) of each step and sensor."""
        return terms.contributions.reshape(-1, self.window, len(self.sensors))

    def results(self, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
        """`/score` results, one per window (its closing `row`, and `timestamp` when sent), with
        `top_sensors`: the `explain` sensors of largest summed error over the window, each with
        the window step (0 = oldest) where its error peaked."""
        inputs: SequenceInputs = scored.inputs
        errors = self.sensor_errors(scored.terms)
        per_sensor = errors.sum(axis=1)  # (B, C)
        worst_step = errors.argmax(axis=1)  # (B, C)
        ranked = np.argsort(-per_sensor, axis=1, kind="stable")[:, :explain]
        results = result_fields(scored)
        rows = inputs.rows.tolist()
        for i, result in enumerate(results):
            result["row"] = rows[i]
            if inputs.timestamps is not None:
                result["timestamp"] = inputs.timestamps[i]
            result["top_sensors"] = [
                {
                    "sensor": self.sensors[c],
                    "contribution": float(per_sensor[i, c]),
                    "step": int(worst_step[i, c]) - self.window + 1,  # 0 = the closing row, -1 the one before
                }
                for c in ranked[i].tolist()
            ]
        return results

    def reconstruct(self, inputs: SequenceInputs, terms: ScoreTerms) -> list[dict[str, object]]:
        """The window as the decoder sees it at the code, in sensor units, with each sensor's error."""
        expected: SequenceDecoderOutput = terms.expected
        levels = self.standardize(inputs.windows)[2][:, None, :]  # (B, 1, C)
        means = self.scaling.to_original(expected.mean.double().numpy() + levels)  # (B, T, C)
        errors = self.sensor_errors(terms).sum(axis=1)
        rows = inputs.rows.tolist()
        return [
            {
                "row": rows[i],
                "reconstruction": {s: means[i, :, c].tolist() for c, s in enumerate(self.sensors)},
                "sensor_errors": {s: float(errors[i, c]) for c, s in enumerate(self.sensors)},
                "reconstruction_error": float(terms.reconstruction_error[i]),
            }
            for i in range(len(rows))
        ]

    def _draw(self, decoded: SequenceDecoderOutput, generator: torch.Generator) -> np.ndarray:
        """(n, T, C) windows in sensor units drawn from p(x | z)."""
        std = torch.exp(0.5 * decoded.logvar).cpu()
        noise = torch.randn(decoded.mean.shape, generator=generator)
        dof = self.config.sensor_dof
        if dof is not None:  # Student-t: a normal over the root of an independent chi-square / dof
            chi2 = torch.randn((dof, *decoded.mean.shape), generator=generator).square().sum(0)
            noise = noise / torch.sqrt(chi2 / dof).clamp_min(1e-6)
        z = decoded.mean.cpu() + std * noise
        return self.scaling.to_original(z.double().numpy())

    def render_samples(
        self, decoded: SequenceDecoderOutput, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> list[dict[str, object]]:
        """Generated windows: one list of T values per sensor."""
        windows = self._draw(decoded, generator)
        return [{s: w[:, c].tolist() for c, s in enumerate(self.sensors)} for w in windows]

    def render_expected(
        self, decoded: SequenceDecoderOutput, condition: np.ndarray | None = None
    ) -> list[dict[str, object]]:
        """E[x | z] at each code: one list of T values per sensor, in sensor units (sequence models
        have no condition)."""
        means = self.scaling.to_original(decoded.mean.cpu().double().numpy())  # (n, T, C)
        return [{s: w[:, c].tolist() for c, s in enumerate(self.sensors)} for w in means]

    def input_keys(self, inputs: SequenceInputs) -> list[dict[str, object]]:
        """Each window's closing row (and its timestamp when the request sent them), as in `/score`."""
        rows = inputs.rows.tolist()
        if inputs.timestamps is None:
            return [{"row": row} for row in rows]
        return [{"row": row, "timestamp": stamp} for row, stamp in zip(rows, inputs.timestamps, strict=True)]

    def render_grid(self, decoded: SequenceDecoderOutput) -> str:
        from vae_anomaly.model.errors import UnsupportedError

        raise UnsupportedError("sequence models have no sample grid; use /sample", "grid", "unsupported")

    def inputs_from_decoded(
        self, decoded: SequenceDecoderOutput, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> SequenceInputs:
        windows = self._draw(decoded, generator)
        return SequenceInputs(windows, np.arange(len(windows), dtype=np.int64) + self.window - 1)

    def calibrated_config(self, terms: ScoreTerms) -> BaseModel:
        return self.config


def _before(earlier: object, later: object) -> bool:
    """Strictly increasing timestamps: numbers compared as numbers, text as ISO-8601 instants."""
    if isinstance(earlier, (int, float)) and isinstance(later, (int, float)):
        return later > earlier
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(later)) > datetime.fromisoformat(str(earlier))
    except ValueError:
        return str(later) > str(earlier)
