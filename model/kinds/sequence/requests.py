"""The request envelope of sequence models: a columnar series, oldest row first."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_SERIES_ROWS = 100_000


class SeriesBody(BaseModel):
    """Sensor readings: column names, then one list of values per time step (null = missing)."""

    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(min_length=1)
    data: list[list[float | None]] = Field(min_length=1, max_length=MAX_SERIES_ROWS)


class SequenceScoreRequest(BaseModel):
    """Recent history of one series; a result comes back for every row that closes a full window."""

    model_config = ConfigDict(extra="forbid")

    series: SeriesBody
    timestamps: list[float | str] | None = Field(default=None, description="one per row, strictly increasing")
    explain: int = Field(default=3, ge=0, le=1000, description="how many top sensors to list per row")

    def size(self) -> int:
        return len(self.series.data)
