"""Shared code reaches concrete data kinds and families only through the registries.

`model.kinds.KINDS` and `model.families.FAMILIES` are the one place a concrete kind or family is
named; the shared modules (detector, scoring, artifact, the trainer, the service) import the
registries and the protocols (`model.kinds.base`, `model.families.base`), never e.g.
`model.kinds.tabular.kind`. Families build on any kind, so they import no concrete kind either, and
a concrete kind imports no other kind. Checked on the source with `ast`, so imports inside functions
count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHARED = [
    "model/detector.py",
    "model/scoring.py",
    "model/artifact.py",
    "model/thresholds.py",
    "model/errors.py",
    "model/distributions.py",
    "model/networks.py",
    "model/latent.py",
    "model/conditions.py",
    "model/kinds/base.py",
    "model/families/base.py",
    "training/trainer.py",
    "training/config.py",
    "training/rows.py",
    "training/latent_report.py",
    "training/evaluate.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "service").glob("*.py")),
]
PACKAGE = "vae_anomaly."  # model/ is installed as vae_anomaly.model (vae_anomaly/__init__.py)
AXES = ("vae_anomaly.model.kinds", "vae_anomaly.model.families")
PROTOCOLS = {"vae_anomaly.model.kinds.base", "vae_anomaly.model.families.base"}


def imported_modules(source: str, filename: str) -> set[str]:
    """Absolute module names imported (`from a.b import c` gives a.b and a.b.c: c may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def concrete(module: str) -> str | None:
    """'vae_anomaly.model.kinds.tabular' for any module under a concrete kind or family, else None."""
    for axis in AXES:
        if module.startswith(axis + "."):
            name = axis + "." + module[len(axis) + 1 :].split(".")[0]
            return None if name in PROTOCOLS else name
    return None


def violations(root: Path, shared: list[str]) -> list[str]:
    out = []
    for relative in shared:
        path = root / relative
        for module in sorted(imported_modules(path.read_text(), str(path))):
            if concrete(module) is not None and module.rsplit(".", 1)[-1] not in {"KINDS", "FAMILIES"}:
                out.append(f"{relative} imports {module}")
    for axis in AXES:
        directory = root / axis.removeprefix(PACKAGE).replace(".", "/")  # the top-level folders
        for path in sorted(directory.rglob("*.py")):
            relative = str(path.relative_to(root))
            parts = path.relative_to(root).with_suffix("").parts
            own = concrete(PACKAGE + ".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            if own is None:  # the registry (__init__) and the protocol modules
                continue
            for module in sorted(imported_modules(path.read_text(), str(path))):
                # A family may build another one through the registry (the ensemble builds `vae` members).
                other = None if module.rsplit(".", 1)[-1] in {"KINDS", "FAMILIES"} else concrete(module)
                crosses_kinds = other is not None and other != own and other.startswith("vae_anomaly.model.kinds")
                family_to_family = other is not None and other != own and own.startswith("vae_anomaly.model.families")
                if crosses_kinds or family_to_family:
                    out.append(f"{relative} imports {module}")
    return out


def test_checker_finds_concrete_imports(tmp_path: Path):
    (tmp_path / "model" / "kinds" / "tabular").mkdir(parents=True)
    (tmp_path / "model" / "kinds" / "image").mkdir(parents=True)
    (tmp_path / "model" / "families").mkdir(parents=True)
    (tmp_path / "model" / "scoring.py").write_text(
        "from vae_anomaly.model.kinds import KINDS\nfrom vae_anomaly.model.kinds.base import DataKind\n"
    )
    (tmp_path / "model" / "detector.py").write_text(
        "def f():\n    from vae_anomaly.model.kinds.tabular.kind import TabularKind\n"
    )
    (tmp_path / "model" / "artifact.py").write_text("import vae_anomaly.model.families.vae\n")
    (tmp_path / "model" / "kinds" / "image" / "kind.py").write_text(
        "from vae_anomaly.model.kinds.tabular import schema\n"
    )
    (tmp_path / "model" / "kinds" / "tabular" / "kind.py").write_text(
        "from vae_anomaly.model.kinds.tabular.schema import Schema\n"
    )
    (tmp_path / "model" / "families" / "vae.py").write_text(
        "from vae_anomaly.model.kinds.image.kind import ImageKind\n"
    )
    shared = ["model/scoring.py", "model/detector.py", "model/artifact.py"]
    assert violations(tmp_path, shared) == [
        "model/detector.py imports vae_anomaly.model.kinds.tabular.kind",
        "model/detector.py imports vae_anomaly.model.kinds.tabular.kind.TabularKind",
        "model/artifact.py imports vae_anomaly.model.families.vae",
        "model/kinds/image/kind.py imports vae_anomaly.model.kinds.tabular",
        "model/kinds/image/kind.py imports vae_anomaly.model.kinds.tabular.schema",
        "model/families/vae.py imports vae_anomaly.model.kinds.image.kind",
        "model/families/vae.py imports vae_anomaly.model.kinds.image.kind.ImageKind",
    ]


def test_shared_modules_reach_kinds_and_families_only_through_the_registries():
    assert all((ROOT / relative).is_file() for relative in SHARED)
    assert violations(ROOT, SHARED) == []
