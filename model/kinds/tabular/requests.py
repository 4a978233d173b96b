"""The request envelopes of tabular models: records (one object each) or a columnar table. The
records themselves are checked against the model's schema by `model.kinds.tabular.json_columns`;
these models check the envelope around them."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from vae_anomaly.model.kinds.base import RequestIds


class ScoreRequest(RequestIds):
    model_config = ConfigDict(extra="forbid")

    records: list[Any] = Field(
        min_length=1,
        description="Records to score: one object per record with every feature key (null for missing). "
        "At most VAE_ANOMALY_MAX_BATCH records (413 above).",
        examples=[[{"amount": 54.2, "channel": "web"}]],
    )
    explain: int = Field(default=3, ge=0, le=1000, description="how many top features to list per record")

    def size(self) -> int:
        return len(self.records)


class ColumnarScoreRequest(RequestIds):
    """The same records as a table: cheaper to send and to parse than one object per record."""

    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(
        min_length=1, description="feature names, each feature exactly once", examples=[["amount", "channel"]]
    )
    data: list[list[Any]] = Field(
        min_length=1,
        description="one array per record, values in `columns` order (null for missing). "
        "At most VAE_ANOMALY_MAX_BATCH rows (413 above).",
        examples=[[[54.2, "web"]]],
    )
    explain: int = Field(default=3, ge=0, le=1000, description="how many top features to list per record")

    def size(self) -> int:
        return len(self.data)
