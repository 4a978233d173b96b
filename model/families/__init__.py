"""The family registry: a family is one module and one line here (see `model.families.base`)."""

from __future__ import annotations

from model.families.base import Family
from model.families.cvae import CVAE
from model.families.vae import BETA_VAE, VAE

FAMILIES: dict[str, Family] = {
    "vae": VAE,
    "beta-vae": BETA_VAE,
    "cvae": CVAE,
}


def family_named(name: str) -> Family:
    """The registered family `name`; raises `KeyError` with the known names."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None
