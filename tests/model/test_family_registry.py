"""The family registry knows its names without importing a family module, and each of its lines
loads the `Family` of that name (a typo in a "module:ATTRIBUTE" line fails here, not in a user's run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vae_anomaly.model.families import FAMILIES, FamilyRegistry, family_named
from vae_anomaly.model.families.base import Family

NAMES_PROBE = """
import sys
from vae_anomaly.model.families import FAMILIES
names = (list(FAMILIES), "vae" in FAMILIES, "nope" in FAMILIES, len(FAMILIES))
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("vae_anomaly.model.families."))
print(names, loaded)
"""


def test_names_are_known_without_loading_any_family(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", NAMES_PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    names = "['vae', 'beta-vae', 'ae', 'dae', 'sparse-ae', 'aae', 'iwae', 'hvae', 'cvae', 'vae-ensemble']"
    assert done.stdout.strip() == f"({names}, True, False, 10) []"


def test_every_line_loads_the_family_of_its_name():
    assert all(isinstance(FAMILIES[name], Family) and FAMILIES[name].name == name for name in FAMILIES)
    assert [family.name for family in FAMILIES.values()] == list(FAMILIES)
    assert family_named("hvae") is FAMILIES["hvae"]


def test_a_wrong_line_or_name_is_refused():
    with pytest.raises(TypeError, match="'vae': autoencoder:AE is not the Family named 'vae'"):
        FamilyRegistry({"vae": "autoencoder:AE"})["vae"]
    with pytest.raises(KeyError):
        FAMILIES["nope"]
    with pytest.raises(KeyError, match="unknown family 'nope'; known: vae, beta-vae"):
        family_named("nope")
