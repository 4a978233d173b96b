"""`TrainConfig`, every knob of a training run, and the checks of which options go to which kind
or family; `IMAGE_DEFAULTS`, where image training departs from it.

Apart from the training loop (`training.trainer` re-exports the config and its checks,
`training.image_trainer` the image defaults) because it imports neither torch nor numpy at import
time: the kind registry is reached inside the functions, and the family registry knows its names
without loading a family, so `vae-anomaly train --help` reads its defaults
(`TrainConfig.model_fields`) and choices from here and stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vae_anomaly.model.defaults import DEFAULT_TARGETS, ScoreMethod
from vae_anomaly.model.families import FAMILIES

if TYPE_CHECKING:
    from vae_anomaly.model.families.base import FamilyConfig


def kind_option_names() -> dict[str, set[str]]:
    """Each registered kind's training options."""
    from vae_anomaly.model.kinds import KINDS  # imports the kinds, hence torch

    return {name: set(kind.options_model.model_fields) for name, kind in KINDS.items()}


def family_option_names() -> dict[str, set[str]]:
    """Each registered family's own training options."""
    return {name: family.option_names() for name, family in FAMILIES.items()}


class OptionsError(ValueError):
    """Options given that the chosen kind or family does not take; the message names them and
    the kinds or families that do."""


def _owners(option: str, names: dict[str, set[str]]) -> str:
    return ", ".join(name for name, options in names.items() if option in options)


def refused_family_options(family: str, options: Any, spell: Any = repr) -> str | None:
    """Why `options` (names) cannot go to `family`, naming the families they belong to; None when
    all are its own. `spell` writes an option's name (the CLI passes one that gives its flag)."""
    wrong = sorted(set(options) - FAMILIES[family].option_names())
    if not wrong:
        return None
    families = family_option_names()
    return "; ".join(
        f"{spell(option)} is not an option of family {family!r}"
        + (f" (it is of {_owners(option, families)})" if _owners(option, families) else "")
        for option in wrong
    )


class TrainConfig(BaseModel):
    """Every knob of a training run; the resolved values go into the manifest.

    Three parts: the generic loop knobs (fields here), `kind_options` (validated by the data
    kind's `options_model`, e.g. the tabular backbone's `hidden_dims`, the image `likelihood`) and
    `family_options` (validated by the family's config, e.g. `beta`). A flat option such as
    `TrainConfig(hidden_dims=[16])` is routed to the part whose registered models name it.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=400, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    steps_per_epoch: int = Field(default=16, ge=1, description="with batch_size None: the automatic batch's target")
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    latent_dim: int | None = Field(default=None, ge=1)
    patience: int = Field(default=50, ge=1)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    validation_trim: float = Field(
        default=0.0, ge=0, lt=0.5, description="early stopping: share of the worst validation rows left out"
    )
    calibration_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    score_method: ScoreMethod | None = Field(default=None, description="default: the family's default score")
    score_samples: int = Field(default=32, ge=1)
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TARGETS))
    active_threshold: str = "warn"
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(
        default=None, ge=1, description="intra-op CPU threads; default: by the work per step (model.threads)"
    )
    family: str = "vae"
    kind_options: dict[str, Any] = Field(default_factory=dict)
    family_options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind_options = dict(data.pop("kind_options", None) or {})
        family_options = dict(data.pop("family_options", None) or {})
        kinds, families = kind_option_names(), family_option_names()
        for key in [k for k in data if k not in cls.model_fields]:
            if any(key in names for names in kinds.values()):
                kind_options[key] = data.pop(key)
            elif any(key in names for names in families.values()):
                family_options[key] = data.pop(key)
        return {**data, "kind_options": kind_options, "family_options": family_options}

    @model_validator(mode="after")
    def _known_family(self) -> TrainConfig:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        refusal = refused_family_options(self.family, self.family_options)
        if refusal:
            raise OptionsError(refusal)
        return self

    def kind_options_for(self, kind: str) -> BaseModel:
        """`kind_options` validated by the kind's options model; `OptionsError` names options of
        other kinds."""
        from vae_anomaly.model.kinds import KINDS

        model = KINDS[kind].options_model
        wrong = sorted(set(self.kind_options) - set(model.model_fields))
        if wrong:
            kinds = kind_option_names()
            raise OptionsError(
                "; ".join(
                    f"{option!r} is an option of {_owners(option, kinds)} models, not {kind} ones" for option in wrong
                )
            )
        return model.model_validate(self.kind_options)

    def family_config(self, latent_dim: int) -> FamilyConfig:
        """The family's config: its options plus the latent size."""
        try:
            return FAMILIES[self.family].config_model.model_validate({**self.family_options, "latent_dim": latent_dim})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'options'}: {error['msg']}" for error in exc.errors()
            )
            raise OptionsError(f"family {self.family!r}: {problems}") from exc


IMAGE_DEFAULTS = {"epochs": 100, "patience": 20, "score_samples": 8}
"""Where image training departs from the tabular defaults of `TrainConfig`, and why:
- epochs 100 / patience 20: the validation ELBO of a conv VAE on a few hundred images peaks within
  a few dozen epochs (MNIST digits: best epochs 25-30 at lr 3e-3), and an image epoch costs far more
  than a tabular one;
- 8 posterior draws for the score instead of 32: every draw is a full decoder pass per image, and
  with antithetic pairs the ELBO of an image moves by well under its spread across images."""
