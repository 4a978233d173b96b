"""The dependency arrows between the packages point one way: training → model ← service.

model imports neither training nor service; service does not import training; training does not
import service (the CLI starts the server through an import string). Checked on the source with
`ast`, so imports inside functions and under `if TYPE_CHECKING:` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "model": {"training", "service"},
    "service": {"training"},
    "training": {"service"},
}


def imported_packages(source: str, filename: str, package: str) -> set[str]:
    """Top-level packages a module imports; relative imports resolve to its own package."""
    found = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add(package)
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def violations(root: Path) -> list[str]:
    out = []
    for package, forbidden in FORBIDDEN.items():
        directory = root / package
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.py")):
            bad = imported_packages(path.read_text(), str(path), package) & forbidden
            out += [f"{path.relative_to(root)} imports {name}" for name in sorted(bad)]
    return out


def test_checker_finds_forbidden_imports(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ok.py").write_text("import numpy\nfrom model.schema import Schema\nfrom . import vae\n")
    (tmp_path / "model" / "bad.py").write_text("def f():\n    from training.trainer import fit_detector\n")
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "app.py").write_text("import model\nimport training.cli as cli\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "sub").mkdir()
    (tmp_path / "training" / "sub" / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from service.app import create_app\n"
    )
    assert violations(tmp_path) == [
        "model/bad.py imports training",
        "service/app.py imports training",
        "training/sub/x.py imports service",
    ]


def test_checker_tolerates_an_absent_package(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.py").write_text("import service\n")
    assert violations(tmp_path) == ["model/a.py imports service"]


def test_dependency_arrows_point_one_way():
    modules = {package: list((ROOT / package).rglob("*.py")) for package in FORBIDDEN}
    assert modules["model"] and modules["training"], "model/ and training/ must be found from the test"
    assert violations(ROOT) == []
