"""The tabular kind: mixed-type records (numeric, categorical, boolean; missing values allowed).

Codec: JSON records or a columnar table → checked columns (`json_columns`, `preprocessing`) →
`EncodedBatch`; backbone: MLPs (`backbone`); likelihood: per feature (`likelihood`); results carry
`top_features` (the features whose hiding lowers the score most, `explanations`) and reconstructions
in original units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn

from vae_anomaly.model.conditions import ConditionSpec
from vae_anomaly.model.errors import UnsupportedError
from vae_anomaly.model.kinds.base import Corruption, InputLimits
from vae_anomaly.model.kinds.tabular import conditions
from vae_anomaly.model.kinds.tabular.backbone import DecoderOutput, TabularDecoder, TabularEncoder, TabularNetworkConfig
from vae_anomaly.model.kinds.tabular.explanations import explain_masked
from vae_anomaly.model.kinds.tabular.json_columns import json_records_to_columns, json_table_to_columns
from vae_anomaly.model.kinds.tabular.likelihood import feature_log_probs
from vae_anomaly.model.kinds.tabular.preprocessing import (
    Columns,
    EncodedBatch,
    NumericScaling,
    Preprocessing,
    TabularCodec,
    check_columns,
)
from vae_anomaly.model.kinds.tabular.requests import ColumnarScoreRequest, ScoreRequest
from vae_anomaly.model.kinds.tabular.schema import FeatureSpec, Schema
from vae_anomaly.model.scoring import (
    ScoreBatch,
    ScoreTerms,
    ScoringConfig,
    ScoringNetwork,
    result_fields,
    score_in_chunks,
)


class TabularKindConfig(BaseModel):
    """The tabular manifest section: the feature schema, the preprocessing statistics, the backbone."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    feature_schema: Schema = Field(alias="schema")
    preprocessing: Preprocessing
    network: TabularNetworkConfig
    condition: ConditionSpec | None = Field(
        default=None, description="condition columns (`--condition-columns`): inputs of every record, never scored"
    )


class TabularOptions(BaseModel):
    """Training options of tabular models (the backbone's shape and numeric likelihood)."""

    model_config = ConfigDict(extra="forbid")

    hidden_dims: list[PositiveInt] | None = Field(default=None, description="default: two layers from the input width")
    numeric_variance: Literal["feature", "sample", "fixed"] = "feature"
    numeric_logvar_min: float = Field(default=-4.6, le=0.0)
    numeric_scaling: NumericScaling = Field(
        default="standard", description="tails: asinh scaling of heavy-tailed numeric features"
    )
    dropout: float = Field(default=0.0, ge=0, lt=1)
    condition_columns: list[str] = Field(
        default_factory=list,
        description="conditional families (cvae): columns that are the context of each record, not features",
    )


def tabular_network_config(codec: TabularCodec, options: TabularOptions) -> TabularNetworkConfig:
    """Resolve the backbone's sizes from the data's width when the options leave them open."""
    width = int(min(256, max(64, 2 * codec.input_dim)))
    return TabularNetworkConfig(
        input_dim=codec.input_dim,
        hidden_dims=options.hidden_dims if options.hidden_dims is not None else [width, width // 2],
        n_numeric=len(codec.numeric),
        category_sizes=codec.category_sizes,
        n_boolean=len(codec.boolean),
        numeric_variance=options.numeric_variance,
        numeric_logvar_min=options.numeric_logvar_min,
        dropout=options.dropout,
    )


def _feature_blocks(codec: TabularCodec) -> list[tuple[str, int]]:
    """Per schema position: its type block and its index there (the decoder's output is by block)."""
    blocks: list[tuple[str, int]] = [("", 0)] * len(codec.schema.features)
    for block, positions in (
        ("numeric", codec.numeric_positions),
        ("categorical", codec.categorical_positions),
        ("boolean", codec.boolean_positions),
    ):
        for index, position in enumerate(positions):
            blocks[position] = (block, index)
    return blocks


class TabularKind:
    """Records with a schema; see the module docstring."""

    name: ClassVar[str] = "tabular"
    config_model: ClassVar[type[BaseModel]] = TabularKindConfig
    options_model: ClassVar[type[BaseModel]] = TabularOptions
    request_models: ClassVar[tuple[type[BaseModel], ...]] = (ScoreRequest, ColumnarScoreRequest)
    input_fields: ClassVar[tuple[str, ...]] = ("records", "columns", "data")
    batch_fields: ClassVar[tuple[str, ...]] = ("records", "data")
    expected_input: ClassVar[str] = "a tabular model: send 'records' (or 'columns' and 'data')"
    explanation_field: ClassVar[str] = "top_features"
    micro_batch: ClassVar[bool] = True
    result_unit: ClassVar[str] = "row"

    def __init__(self, config: TabularKindConfig):
        self.config = config
        self.schema = config.feature_schema
        self.feature_by_name = {f.name: f for f in self.schema.features}
        self.codec = TabularCodec(self.schema, config.preprocessing)
        self.condition = config.condition
        self.owners = torch.from_numpy(self.codec.input_feature_index())
        self.blocks = _feature_blocks(self.codec)

    def default_latent_dim(self) -> int:
        return int(min(16, max(2, math.ceil(len(self.schema.features) / 2))))

    def condition_spec(self) -> ConditionSpec | None:
        return self.condition

    # -- backbone and likelihood -------------------------------------------------------------------

    def build_encoder(self) -> nn.Module:
        return TabularEncoder(self.config.network)

    def feature_dim(self) -> int:
        network = self.config.network
        return network.hidden_dims[-1] if network.hidden_dims else network.input_dim

    def build_decoder(self, latent_dim: int) -> nn.Module:
        return TabularDecoder(self.config.network, latent_dim)

    def log_likelihood(self, decoded: DecoderOutput, batch: EncodedBatch) -> torch.Tensor:
        return feature_log_probs(self.codec, decoded, batch)

    def corrupt(self, batch: EncodedBatch, corruption: Corruption, generator: torch.Generator) -> EncodedBatch:
        """Masking hides whole features from the encoder (values and observed-indicators), so the
        model learns to impute what it cannot see; Gaussian noise perturbs the standardised numerics
        that were observed. The likelihood's targets stay the clean batch."""
        device = batch.x_in.device
        corrupted = EncodedBatch(**batch.__dict__)
        if corruption.kind == "masking":
            owners = self.owners.to(device)
            keep = torch.rand((len(batch), len(self.schema.features)), generator=generator) >= corruption.rate
            corrupted.x_in = batch.x_in * keep.to(device)[:, owners].float()
        else:
            n = len(self.codec.numeric)
            noise = torch.randn((len(batch), n), generator=generator).to(device) * corruption.rate
            x_in = batch.x_in.clone()
            x_in[:, :n] = x_in[:, :n] + torch.where(batch.numeric_mask, noise, 0.0)
            corrupted.x_in = x_in
        return corrupted

    # -- codec ---------------------------------------------------------------------------------------

    def batch(self, inputs: Columns) -> EncodedBatch:
        batch = self.codec.encode(inputs)
        if self.condition is not None:
            batch.condition = self.condition.one_hot(conditions.condition_index(self.condition, inputs))
        return batch

    def count(self, inputs: Columns) -> int:
        return len(next(iter(inputs.values())))

    def concat(self, parts: Sequence[Columns]) -> Columns:
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def missing(self, inputs: Columns) -> np.ndarray:
        return self.codec.missing(inputs)

    def parse_request(self, data: dict[str, Any]) -> ScoreRequest | ColumnarScoreRequest:
        if "columns" in data:
            return ColumnarScoreRequest.model_validate(data)
        return ScoreRequest.model_validate(data)

    def request_inputs(self, body: ScoreRequest | ColumnarScoreRequest, limits: InputLimits) -> Columns:
        if isinstance(body, ScoreRequest):
            return self.columns_from_records(body.records)
        return self.columns_from_rows(body.columns, body.data)

    def columns_from_records(self, records: Sequence[object]) -> Columns:
        """JSON records → checked columns (the rules of `records_to_columns`, checked per column),
        plus the condition columns of a conditional model (`model.kinds.tabular.conditions`)."""
        if self.condition is not None:
            return conditions.split_records(
                self.condition, records, lambda rest: json_records_to_columns(self.schema, rest), "records"
            )
        return json_records_to_columns(self.schema, records)

    def columns_from_rows(self, names: Sequence[str], rows: Sequence[Sequence[object]]) -> Columns:
        """A columnar JSON body (column names, rows of values) → checked columns."""
        if self.condition is not None:
            return conditions.split_table(
                self.condition, names, rows, lambda rest, data: json_table_to_columns(self.schema, rest, data)
            )
        return json_table_to_columns(self.schema, names, rows)

    def columns_from_table(self, columns: dict[str, np.ndarray]) -> Columns:
        """Columns read from a file → checked columns."""
        if self.condition is not None:
            return conditions.split_file_columns(self.condition, columns, lambda rest: check_columns(self.schema, rest))
        return check_columns(self.schema, columns)

    def input_signature(self) -> object:
        return self.schema

    def request_schema(self) -> dict[str, Any]:
        """The records and columnar envelopes with this model's features filled in: a record is an
        object with every feature key (null where missing, unless the feature is required) and any
        condition columns; the columnar form's `columns` name them."""
        properties: dict[str, Any] = {feature.name: _feature_schema(feature) for feature in self.schema.features}
        if self.condition is not None:
            for variable in self.condition.variables:
                properties[variable.name] = {"description": f"condition column, one of {variable.known()}"}
        example = self.example_body(1)["records"][0]  # the generic examples name the demo's features
        records = ScoreRequest.model_json_schema()
        records["properties"]["records"]["items"] = {
            "type": "object",
            "properties": properties,
            "required": list(properties),
        }
        records["properties"]["records"]["examples"] = [[example]]
        columnar = ColumnarScoreRequest.model_json_schema()
        columnar["properties"]["columns"]["items"] = {"type": "string", "enum": list(properties)}
        columnar["properties"]["columns"]["examples"] = [list(example)]
        columnar["properties"]["data"]["examples"] = [[list(example.values())]]
        return {"oneOf": [records, columnar]}

    def example_body(self, n: int) -> dict[str, Any]:
        """`n` copies of a typical record: each numeric feature at its training centre (3
        significant digits; whole for integer features), a category's first value, false; the
        condition's first values."""
        record: dict[str, Any] = {}
        for feature in self.schema.features:
            if feature.type == "numeric":
                stats = self.codec.preprocessing.numeric.get(feature.name)
                center = stats.center if stats is not None else 0.0
                record[feature.name] = round(center) if feature.integer else float(f"{center:.3g}")
            elif feature.type == "categorical":
                record[feature.name] = feature.categories[0] if feature.categories else "a"
            else:
                record[feature.name] = False
        if self.condition is not None:
            record.update(self.condition.example())
        return {"records": [dict(record) for _ in range(n)]}

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            "schema": self.schema.model_dump(mode="json"),
            "network": self.config.network.model_dump(mode="json"),
        }
        if self.condition is not None:
            described["condition"] = self.condition.model_dump(mode="json")
        return described

    # -- rendering -----------------------------------------------------------------------------------

    def results(self, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
        return score_results(self, scored, explain)

    def expected_records(self, terms: ScoreTerms) -> list[dict[str, object]]:
        """The decoder's most likely record at the posterior mean, in original units."""
        columns = self.expected_columns(terms)
        return [{name: columns[name][i] for name in self.schema.names} for i in range(len(terms.score))]

    def expected_columns(self, terms: ScoreTerms) -> dict[str, list[object]]:
        """`expected_records` as one list per feature."""
        return self.decoded_columns(terms.expected)

    def decoded_columns(self, decoded: DecoderOutput) -> dict[str, list[object]]:
        """The most likely record at each decoded code (numeric means, the likeliest category and
        boolean), in original units, as one list per feature."""
        decoded = decoded.cpu()
        n = decoded.numeric_mean.shape[0]
        category_index = (
            np.stack([logits.argmax(-1).numpy() for logits in decoded.category_logits], axis=1)
            if decoded.category_logits
            else np.zeros((n, 0), dtype=np.int64)
        )
        boolean_value = (decoded.boolean_logits > 0).numpy().astype(np.float64)
        return self.codec.decode_columns(decoded.numeric_mean.double().numpy(), category_index, boolean_value)

    def render_expected(self, decoded: DecoderOutput, condition: np.ndarray | None = None) -> list[dict[str, object]]:
        """The most likely record at each code, in original units (as `/reconstruct` shows it); a
        conditional model's records carry `condition` in their condition columns."""
        columns = self.decoded_columns(decoded)
        n = decoded.numeric_mean.shape[0]
        records = [{name: columns[name][i] for name in self.schema.names} for i in range(n)]
        return self._with_condition(records, condition)

    def input_keys(self, inputs: Columns) -> list[dict[str, object]]:
        return [{} for _ in range(self.count(inputs))]

    def reconstruct(self, inputs: Columns, terms: ScoreTerms) -> list[dict[str, object]]:
        """Reconstruction (denoised record, missing entries imputed) and per-feature errors."""
        reconstructions = self.expected_records(terms)
        if self.condition is not None:  # the context as given: a record as the model saw it
            given = self.condition.outputs(conditions.condition_index(self.condition, inputs))
            reconstructions = [{**record, **context} for record, context in zip(reconstructions, given, strict=True)]
        missing = self.codec.missing(inputs)
        names = self.schema.names
        results = []
        for i, reconstruction in enumerate(reconstructions):
            errors = {
                name: (None if missing[i, j] else float(terms.contributions[i, j])) for j, name in enumerate(names)
            }
            imputed = [name for j, name in enumerate(names) if missing[i, j]]
            results.append({"reconstruction": reconstruction, "feature_errors": errors, "imputed": imputed})
        return results

    def render_samples(
        self, decoded: DecoderOutput, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> list[dict[str, object]]:
        """x ~ p(x|z) for each decoded z, as records in original units; a conditional model's
        records carry the condition they were drawn under in their condition columns."""
        n = decoded.numeric_mean.shape[0]
        std = torch.exp(0.5 * decoded.numeric_logvar).cpu()
        numeric = decoded.numeric_mean.cpu() + std * torch.randn(std.shape, generator=generator)
        categories = [
            torch.multinomial(torch.softmax(logits.cpu().double(), -1), 1, generator=generator).squeeze(-1)
            for logits in decoded.category_logits
        ]
        category_index = torch.stack(categories, 1).numpy() if categories else np.zeros((n, 0), dtype=np.int64)
        probs = torch.sigmoid(decoded.boolean_logits.cpu().double())
        boolean = (torch.rand(probs.shape, generator=generator, dtype=torch.float64) < probs).double().numpy()
        records = self.codec.decode_records(numeric.double().numpy(), category_index, boolean)
        return self._with_condition(records, condition)

    def _with_condition(
        self, records: list[dict[str, object]], condition: np.ndarray | None
    ) -> list[dict[str, object]]:
        """`records` with the condition values at positions `condition` (n, V) in their condition
        columns; unchanged for an unconditional model or no condition."""
        if self.condition is None or condition is None:
            return records
        return [
            {**record, **context} for record, context in zip(records, self.condition.outputs(condition), strict=True)
        ]

    def render_grid(self, decoded: DecoderOutput) -> str:
        raise UnsupportedError("'grid' is for image models; this is a tabular model", "grid", "wrong_model_kind")

    def inputs_from_decoded(
        self, decoded: DecoderOutput, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> Columns:
        return self.columns_from_records(self.render_samples(decoded, generator, condition))

    def calibrated_config(self, terms: ScoreTerms) -> BaseModel:
        return self.config


def score_results(kind: TabularKind, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
    """Build one JSON-ready result per record (see the `/score` contract in the README).

    A feature's contribution is the fall of the score when it alone is hidden (`explanations`),
    its `expected` value what the rest of the record predicts for it; a `ScoreBatch` without a
    `rescore` (one built by hand) falls back to the per-feature terms of -log p(x | z = mu).

    Arrays become flat Python lists once (`tolist`) and the top features are picked for the whole
    batch with one argsort, so the per-record loop only assembles dicts. Flat lists, not lists of
    lists: every container allocated counts toward a garbage collection, and for 4096 records the
    collections cost more than the loop itself.
    """
    terms = scored.terms
    names = kind.schema.names
    missing = scored.missing
    n = len(scored)
    top: list[list[dict[str, object]]] = [[] for _ in range(n)]
    k = min(explain, len(names))
    if k > 0 and n:
        if scored.rescore is not None:
            masked = explain_masked(kind.codec, kind.owners, kind.batch(scored.inputs), missing, scored.rescore)
            contributions, decoded = masked.contributions, masked.expected
        else:
            contributions, decoded = terms.contributions, terms.expected
        # Missing features contribute nothing, so they sink below every observed one in the ranking.
        ranked = np.argsort(-np.where(missing, -np.inf, contributions), axis=1, kind="stable")[:, :k]
        rows = np.repeat(np.arange(n), k)  # record i's top features at [i * k, (i + 1) * k)
        features = ranked.ravel()
        # Values and expectations of the k shown cells only, not of every feature of every record.
        values = _cell_values(kind, scored.inputs, rows, features)
        expected = _expected_cells(kind, decoded, rows, features)
        top_feature = features.tolist()
        top_missing = np.take_along_axis(missing, ranked, axis=1).ravel().tolist()
        top_contribution = np.take_along_axis(contributions, ranked, axis=1).ravel().tolist()
        for i in range(n):
            for m in range(i * k, (i + 1) * k):
                if top_missing[m]:
                    break
                top[i].append(
                    {
                        "feature": names[top_feature[m]],
                        "contribution": top_contribution[m],
                        "value": values[m],
                        "expected": expected[m],
                    }
                )
    missing_names = {int(i): [names[j] for j in np.flatnonzero(missing[i])] for i in np.flatnonzero(missing.any(1))}
    shared = result_fields(scored)
    for i, result in enumerate(shared):
        result["missing"] = missing_names.get(i, [])
        result["top_features"] = top[i]
    return shared


def _groups(features: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(feature, positions in `features` that name it) for each feature named."""
    order = np.argsort(features, kind="stable")
    names, starts = np.unique(features[order], return_index=True)
    return list(zip(names.tolist(), np.split(order, starts[1:]), strict=True))


def _cell_values(kind: TabularKind, columns: Columns, rows: np.ndarray, features: np.ndarray) -> list[object]:
    """`_json_value` of cell (rows[m], features[m]) of the checked columns, for each m: one gather
    per feature named instead of every column as a Python list."""
    out: list[object] = [None] * len(rows)
    for j, positions in _groups(features):
        name = kind.schema.names[j]
        for m, value in zip(positions.tolist(), columns[name][rows[positions]].tolist(), strict=True):
            out[m] = _json_value(kind, name, value)
    return out


def _expected_cells(kind: TabularKind, decoded: DecoderOutput, rows: np.ndarray, features: np.ndarray) -> list[object]:
    """`decoded_columns(decoded)[name][row]` for cell (rows[m], features[m]), for each m, decoding
    the rows of those cells only (through the codec's own `to_original`) and converting only the
    cells shown."""
    decoded = decoded.cpu()
    numeric_std = decoded.numeric_mean.double().numpy()
    out: list[object] = [None] * len(rows)
    for j, positions in _groups(features):
        feature = kind.schema.features[j]
        r = rows[positions]
        block, index = kind.blocks[j]
        if block == "numeric":
            values = kind.codec.to_original(numeric_std[r])[:, index]
            cells: list[object] = [int(v) for v in values] if feature.integer else values.tolist()
        elif block == "categorical":
            categories = feature.categories or []
            cells = [categories[c] for c in decoded.category_logits[index][r].argmax(-1).tolist()]
        else:
            cells = (decoded.boolean_logits[r, index] > 0).tolist()
        for m, cell in zip(positions.tolist(), cells, strict=True):
            out[m] = cell
    return out


def _json_value(kind: TabularKind, name: str, value: object) -> object:
    """A column cell as the client sent it: booleans back to true/false, integers without '.0'."""
    feature = kind.feature_by_name[name]
    if feature.type == "boolean":
        return bool(value)
    if feature.type == "numeric":
        number = float(value)  # type: ignore[arg-type]
        return int(number) if feature.integer and number.is_integer() and abs(number) < 2**53 else number
    return value


def score_columns(
    network: ScoringNetwork, kind: TabularKind, columns: Columns, noise: torch.Tensor, scoring: ScoringConfig
) -> ScoreTerms:
    """Encode checked columns and score them in chunks of `scoring.chunk_size` records."""
    return score_in_chunks(network, kind.batch(columns), noise, scoring)


JSON_TYPES = {"numeric": "number", "categorical": "string", "boolean": "boolean"}


def _feature_schema(feature: FeatureSpec) -> dict[str, Any]:
    """One feature's JSON schema in a record: its JSON type, nullable unless required."""
    json_type = JSON_TYPES[feature.type]
    schema: dict[str, Any] = {"type": json_type if feature.required else [json_type, "null"]}
    if feature.categories is not None:
        shown = ", ".join(repr(c) for c in feature.categories[:50]) + (" ..." if len(feature.categories) > 50 else "")
        schema["description"] = f"one of {shown} (another value is scored as a category unseen in training)"
    elif feature.integer:
        schema["description"] = "integer-valued in training"
    return schema
