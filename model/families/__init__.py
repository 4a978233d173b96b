"""The family registry: a family is one module and one line here (see `model.families.base`).

Each line names where the family's `Family` object lives ("module:ATTRIBUTE" in this package), and
the module is imported on the first access to that family: the names (`--family` choices, `name in
FAMILIES`, iteration) are known without importing any family module, hence without torch, so
`vae-anomaly train --help` stays fast. `FAMILIES[name]`, `.items()` and `.values()` load families.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vae_anomaly.model.families.base import Family


class FamilyRegistry(Mapping[str, "Family"]):
    """Family name → `Family`, each loaded from its "module:ATTRIBUTE" path on first access."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = dict(paths)
        self._loaded: dict[str, Family] = {}

    def __getitem__(self, name: str) -> Family:
        family = self._loaded.get(name)
        if family is None:
            from vae_anomaly.model.families.base import Family

            module, _, attribute = self._paths[name].partition(":")  # KeyError for an unknown name
            family = getattr(import_module(f"{__name__}.{module}"), attribute)
            if not isinstance(family, Family) or family.name != name:
                raise TypeError(f"registry line {name!r}: {self._paths[name]} is not the Family named {name!r}")
            self._loaded[name] = family
        return family

    def __contains__(self, name: object) -> bool:
        return name in self._paths  # without loading the family

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


FAMILIES = FamilyRegistry(
    {
        "vae": "vae:VAE",
        "beta-vae": "vae:BETA_VAE",
        "ae": "autoencoder:AE",
        "dae": "autoencoder:DAE",
        "sparse-ae": "autoencoder:SPARSE_AE",
        "aae": "autoencoder:AAE",
        "iwae": "vae:IWAE",
        "hvae": "hvae:HVAE",
        "cvae": "cvae:CVAE",
        "vae-ensemble": "ensemble:VAE_ENSEMBLE",
    }
)


def family_named(name: str) -> Family:
    """The registered family `name`; raises `KeyError` with the known names."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}") from None
