"""The family registry: a family is one module and one line here (see `model.families.base`)."""

from __future__ import annotations

from vae_anomaly.model.families.autoencoder import AAE, AE, DAE, SPARSE_AE
from vae_anomaly.model.families.base import Family
from vae_anomaly.model.families.cvae import CVAE
from vae_anomaly.model.families.hvae import HVAE
from vae_anomaly.model.families.vae import BETA_VAE, IWAE, VAE

FAMILIES: dict[str, Family] = {
    "vae": VAE,
    "beta-vae": BETA_VAE,
    "ae": AE,
    "dae": DAE,
    "sparse-ae": SPARSE_AE,
    "aae": AAE,
    "iwae": IWAE,
    "hvae": HVAE,
    "cvae": CVAE,
}


def family_named(name: str) -> Family:
    """The registered family `name`; raises `KeyError` with the known names."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None
