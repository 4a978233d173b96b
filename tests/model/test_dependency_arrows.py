"""The dependency arrows between the packages point one way: training → model ← service.

model imports neither training nor service; service does not import training; training does not
import service (the CLI starts the server through an import string). The packages are installed as
`vae_anomaly.model`, `vae_anomaly.service` and `vae_anomaly.training` (vae_anomaly/__init__.py), so
`from vae_anomaly.training.x import y` is an import of training, and the bare namespace
(`from vae_anomaly import Detector`, training's API) counts as training too. An import by an old
top-level name (`from model.x import y`) is refused in every Python folder: it resolves only in a
source checkout, never from the installed wheel. Checked on the source with `ast`, so imports
inside functions and under `if TYPE_CHECKING:` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NAMESPACE = "vae_anomaly"
PACKAGES = ("model", "service", "training")
FOLDERS = (*PACKAGES, NAMESPACE, "bench", "scripts", "tests")  # every folder of Python code

FORBIDDEN = {
    "model": {"training", "service"},
    "service": {"training"},
    "training": {"service"},
}


def imports(source: str, filename: str) -> list[tuple[str, int]]:
    """Absolute module names a module imports, with their line; relative imports are left out (they
    stay in their own package). `from vae_anomaly import model` gives vae_anomaly.model."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == NAMESPACE:
                found += [(f"{NAMESPACE}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((node.module, node.lineno))
    return found


def package_of(module: str) -> str:
    """'vae_anomaly.model.x' → 'model'; the namespace's own names (Detector) → 'training'; any
    other module (numpy, or model.x by its old name) → its first component."""
    parts = module.split(".")
    if parts[0] != NAMESPACE:
        return parts[0]
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "training"


def violations(root: Path) -> list[str]:
    out = []
    for package, forbidden in FORBIDDEN.items():
        directory = root / package
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.py")):
            found = {package_of(module) for module, _ in imports(path.read_text(), str(path))}
            out += [f"{path.relative_to(root)} imports {name}" for name in sorted(found & forbidden)]
    return out


def old_name_imports(root: Path) -> list[str]:
    """Imports of model / service / training by their top-level names, in every folder of code."""
    out = []
    for folder in FOLDERS:
        directory = root / folder
        if directory.is_symlink() or not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.py")):  # rglob does not enter vae_anomaly/model (a link)
            for module, line in imports(path.read_text(), str(path)):
                if module.split(".")[0] in PACKAGES:
                    out.append(f"{path.relative_to(root)}:{line} imports {module} (use {NAMESPACE}.{module})")
    return out


def test_checker_finds_forbidden_imports(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ok.py").write_text(
        "import numpy\nfrom vae_anomaly.model.schema import Schema\nfrom vae_anomaly import model\nfrom . import vae\n"
    )
    (tmp_path / "model" / "bad.py").write_text("def f():\n    from vae_anomaly.training.trainer import fit_detector\n")
    (tmp_path / "model" / "api.py").write_text("from vae_anomaly import Detector\n")
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "app.py").write_text("import vae_anomaly.model\nimport vae_anomaly.training.cli as cli\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "sub").mkdir()
    (tmp_path / "training" / "sub" / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vae_anomaly.service.app import create_app\n"
    )
    assert violations(tmp_path) == [
        "model/api.py imports training",
        "model/bad.py imports training",
        "service/app.py imports training",
        "training/sub/x.py imports service",
    ]


def test_checker_tolerates_an_absent_package(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.py").write_text("from vae_anomaly import service\n")
    assert violations(tmp_path) == ["model/a.py imports service"]


def test_dependency_arrows_point_one_way():
    modules = {package: list((ROOT / package).rglob("*.py")) for package in FORBIDDEN}
    assert modules["model"] and modules["training"], "model/ and training/ must be found from the test"
    assert violations(ROOT) == []


def test_old_name_checker_finds_top_level_imports(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import modelling\nfrom vae_anomaly.model import x\n\ndef f():\n    import service.server\n"
    )
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "b.py").write_text("from training.cli import main\nfrom vae_anomaly import Detector\n")
    assert old_name_imports(tmp_path) == [
        "bench/b.py:1 imports training.cli (use vae_anomaly.training.cli)",
        "tests/test_a.py:5 imports service.server (use vae_anomaly.service.server)",
    ]


def test_no_code_imports_the_old_top_level_names():
    assert (ROOT / NAMESPACE / "model").resolve() == (ROOT / "model").resolve(), "vae_anomaly/model links to model/"
    assert old_name_imports(ROOT) == []
