"""The data-kind axis: what a kind (tabular, image, ...) gives the shared code.

A kind owns everything that depends on what an input *is*: the codec (request bodies and files →
checked inputs → tensors), the backbone (encoder body x_in → h (B, H), decoder z (..., B, L) →
the parameters of p(x|z)), the log-likelihood of each input element, and how results,
explanations, reconstructions and samples are rendered. It knows nothing about objectives or
latent structure (`model.families`), and the shared code (`model.detector`, `model.scoring`,
`model.artifact`, `training.trainer`, `service`) reaches a kind only through this protocol and the
`model.kinds.KINDS` registry.

A kind is a class registered by name in `model.kinds.KINDS`; it is built from its manifest section
(`config_model`, a pydantic model) when a model is loaded, and by its own training entry point
(e.g. `training.tabular`) before one is trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, Field, StrictInt, StringConstraints, model_validator
from torch import nn

from vae_anomaly.model.conditions import ConditionSpec
from vae_anomaly.model.scoring import ScoreBatch, ScoreTerms


class Batch(Protocol):
    """Tensors of B inputs as the networks consume them (`x_in` is the encoder's input)."""

    @property
    def x_in(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...

    def to(self, device: torch.device | str) -> Any: ...

    def slice(self, start: int, stop: int) -> Any: ...

    def select(self, index: torch.Tensor) -> Any: ...


class RequestBody(Protocol):
    """A validated request envelope of a kind (`/score`, `/reconstruct`): its inputs are checked
    against the model by `DataKind.request_inputs`."""

    explain: int

    def size(self) -> int: ...


def envelope_schema(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """The JSON schema of a body that is one of `models` (a kind's request envelopes)."""
    schemas = [model.model_json_schema() for model in models]
    return schemas[0] if len(schemas) == 1 else {"oneOf": schemas}


RequestId = Annotated[str, StringConstraints(max_length=256)] | StrictInt
"""A caller's id of one input: a string (at most 256 characters) or an integer."""


class RequestIds(BaseModel):
    """An optional `ids` list for request envelopes whose results come back one per input (records,
    images): the service echoes `ids[i]` as `id` in result i, so results can be joined back to the
    caller's rows without relying on order alone. Subclasses define `size()`."""

    ids: list[RequestId] | None = Field(
        default=None,
        description="optional: one id per record or image (string or integer), echoed as `id` in its result",
        examples=[["order-1041"]],
    )

    def size(self) -> int:
        raise NotImplementedError

    @model_validator(mode="after")
    def _one_id_per_input(self) -> RequestIds:
        if self.ids is not None and len(self.ids) != self.size():
            raise ValueError(f"'ids' has {len(self.ids)} entries but the body has {self.size()} inputs: give one each")
        return self


@dataclass(frozen=True)
class InputLimits:
    """Server limits a kind applies while decoding request inputs. `max_request_pixels` bounds the
    decoded pixels of all of a request's images together (None: no bound), so that small encoded
    images that decode large cannot make one request cost seconds of the compute thread."""

    max_image_pixels: int
    max_request_pixels: int | None = None


@dataclass(frozen=True)
class Corruption:
    """Input corruption for denoising training: `masking` hides a share `rate` of the input's
    elements from the encoder (features for tables, pixels for images); `gaussian` adds noise of
    standard deviation `rate` in the encoder's input units. The likelihood target stays clean."""

    kind: str  # "masking" | "gaussian"
    rate: float


class DataKind(Protocol):
    """What every kind provides. `Inputs` below means the kind's own checked-input type (tabular
    columns, `ImageInputs`, ...); `Decoded` its decoder output (see `model.scoring.Decoded`)."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    """The kind's manifest section (`Manifest.kind_config`)."""
    options_model: ClassVar[type[BaseModel]]
    """The kind's training options (`TrainConfig.kind_options`), e.g. the backbone's widths."""
    request_models: ClassVar[tuple[type[BaseModel], ...]]
    """The request envelopes the service documents for this kind (OpenAPI)."""
    input_fields: ClassVar[tuple[str, ...]]
    """Body fields that carry inputs ("records", "images", ...): batch limits and wrong-kind 422s."""
    batch_fields: ClassVar[tuple[str, ...]]
    """Body fields whose length counts toward the server's batch limit (413 above it)."""
    expected_input: ClassVar[str]
    """What a body for this kind looks like, for error messages: "send 'records' (or ...)"."""
    explanation_field: ClassVar[str]
    """The ranked explanation list in a `/score` result ("top_features", "top_regions")."""
    micro_batch: ClassVar[bool]
    """Whether small requests may be gathered into one pass after checking on the event loop."""
    result_unit: ClassVar[str]
    """What one input is called in reports: "row", "image"."""

    def __init__(self, config: Any) -> None: ...

    def default_latent_dim(self) -> int:
        """The latent size a family uses when the training config leaves it open."""
        ...

    def condition_spec(self) -> ConditionSpec | None:
        """The condition its inputs carry (tabular condition columns, an image label), or None.

        A kind with a condition checks it on every input (absent or unknown → `InputError` naming
        it), never scores it, and puts its one-hot encoding on the batch as `condition` (B, C),
        which conditional families (`cvae`) feed to their encoder and decoder.
        """
        ...

    # -- backbone and likelihood -------------------------------------------------------------------

    def build_encoder(self) -> nn.Module:
        """A fresh encoder body: x_in (B, ...) → h (B, H), H = `feature_dim()`."""
        ...

    def feature_dim(self) -> int:
        """H, the width of the encoder's features: what a family's heads start from."""
        ...

    def build_decoder(self, latent_dim: int) -> nn.Module:
        """A fresh decoder: z (..., B, L) → the kind's `Decoded` for every input element."""
        ...

    def log_likelihood(self, decoded: Any, batch: Any) -> torch.Tensor:
        """log p(x_f | z) per input element (feature, pixel): (..., B, F); 0 where unobserved."""
        ...

    def corrupt(self, batch: Any, corruption: Corruption, generator: torch.Generator) -> Any:
        """The batch with its encoder input corrupted (denoising training); the target stays clean."""
        ...

    # -- codec ---------------------------------------------------------------------------------------

    def batch(self, inputs: Any) -> Any:
        """Checked inputs → a `Batch` on the CPU."""
        ...

    def count(self, inputs: Any) -> int: ...

    def concat(self, parts: Sequence[Any]) -> Any:
        """Join checked inputs of several requests (micro-batching), in order."""
        ...

    def missing(self, inputs: Any) -> np.ndarray:
        """(B, F) bool: elements sent as missing (all False where nothing can be missing)."""
        ...

    def parse_request(self, data: dict[str, Any]) -> RequestBody:
        """A JSON body → the kind's validated envelope; raises pydantic's `ValidationError`."""
        ...

    def request_inputs(self, body: Any, limits: InputLimits) -> Any:
        """A validated envelope → checked inputs; raises `InputError` naming the index and field."""
        ...

    def input_signature(self) -> object:
        """What the model expects of an input (a schema, a geometry): equal signatures accept the
        same bodies (hot reload reports when it changes)."""
        ...

    def describe(self) -> dict[str, object]:
        """JSON-ready description of what the model expects, for `GET /model` ("schema", "image")."""
        ...

    def request_schema(self) -> dict[str, Any]:
        """The JSON schema of a `/score` body for this very model (its features, its sensors), which
        the service publishes in its OpenAPI document; `envelope_schema(request_models)` when the
        envelopes say it all."""
        ...

    def example_body(self, n: int) -> dict[str, Any]:
        """A `/score` body of `n` inputs that this very model accepts (typical values, its
        geometry, its condition): the example the OpenAPI document gives, which `/docs` puts in
        its editors, so "Try it out" works as shown."""
        ...

    # -- rendering -----------------------------------------------------------------------------------

    def results(self, scored: ScoreBatch, explain: int) -> list[dict[str, object]]:
        """`/score` results: `model.scoring.result_fields` of each input plus the kind's
        explanations (the `explain` largest, under `explanation_field`)."""
        ...

    def reconstruct(self, inputs: Any, terms: ScoreTerms) -> list[dict[str, object]]:
        """`/reconstruct` results from terms scored with one noise draw (decoder at the code)."""
        ...

    def render_samples(
        self, decoded: Any, generator: torch.Generator, condition: np.ndarray | None = None
    ) -> list[Any]:
        """Decoder outputs of prior draws → JSON-ready samples (records, base64 PNGs); `condition`
        (n, V) holds the positions of the condition values they were drawn under (records carry
        them in their condition columns), None for an unconditional model."""
        ...

    def render_expected(self, decoded: Any, condition: np.ndarray | None = None) -> list[Any]:
        """Decoder outputs → the most likely input at each code, JSON-ready, as `/reconstruct`
        shows a reconstruction (records in original units, base64 PNGs at the model's geometry,
        sensor windows): what `/interpolate` returns along its path. `condition` (n, V) as in
        `render_samples`: records carry it in their condition columns."""
        ...

    def input_keys(self, inputs: Any) -> list[dict[str, object]]:
        """Per input, the fields besides its position that `/score` uses to identify it in a
        result (a sequence window's closing `row` and `timestamp`); `{}` where order is enough."""
        ...

    def render_grid(self, decoded: Any) -> str:
        """Decoder outputs → one base64 PNG; raises `UnsupportedError` for kinds without pictures."""
        ...

    def inputs_from_decoded(self, decoded: Any, generator: torch.Generator, condition: np.ndarray | None = None) -> Any:
        """Checked inputs made from decoder outputs (under `condition`, as in `render_samples`):
        what warm-up scores."""
        ...

    def calibrated_config(self, terms: ScoreTerms) -> BaseModel:
        """The kind's manifest section once the calibration inputs are scored (the image kind adds
        its per-pixel error baseline). Read only the per-input arrays of `terms`: under data-parallel
        training they are gathered from the ranks and `terms.expected` is None."""
        ...
