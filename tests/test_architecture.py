"""The package's architecture, checked: import contracts, what the sender process loads, and the
shape of the tree (no re-export modules, few modules outside the stage subpackages)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "addons" / "meshmirror"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.mark.parametrize("config", ["pyproject.toml", "scripts/import-contracts-runtime.toml"])
def test_import_contracts_are_kept(config: str) -> None:
    run = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", config],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert " broken" in run.stdout and "0 broken" in run.stdout


def _imported_modules(module: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    # "import time: self [us] | cumulative | imported package", one line per module loaded.
    return [
        line.rsplit("|", 1)[1].strip()
        for line in run.stderr.splitlines()
        if line.startswith("import time:") and "|" in line and "imported package" not in line
    ]


def test_the_sender_process_loads_only_the_copy_machinery() -> None:
    loaded = _imported_modules("meshmirror.mirror.worker")
    ours = {m for m in loaded if m.startswith("meshmirror")}
    assert "meshmirror.mirror.worker" in ours  # the probe saw the module itself
    assert ours <= {"meshmirror", "meshmirror.mirror"} | {
        m for m in ours if m.startswith("meshmirror.mirror.")
    }
    heavy = [m for m in loaded if m.split(".")[0] in {"pydantic", "yaml", "mitmproxy", "re2"}]
    assert heavy == []


def test_the_comparison_process_loads_only_the_comparison() -> None:
    loaded = _imported_modules("meshmirror.outcomes.compare_worker")
    ours = {m for m in loaded if m.startswith("meshmirror")}
    assert "meshmirror.outcomes.compare_worker" in ours
    # The comparison, and the stdlib-only gRPC leaf (statuses, framing, protobuf decoding).
    assert ours <= {"meshmirror", "meshmirror.outcomes", "meshmirror.grpc"} | {
        m for m in ours if m.startswith("meshmirror.outcomes.")
    }
    assert "meshmirror.outcomes.metrics" not in ours  # no prometheus_client either
    heavy = [
        m
        for m in loaded
        if m.split(".")[0] in {"pydantic", "yaml", "mitmproxy", "re2", "prometheus_client"}
    ]
    assert heavy == []


def test_matching_a_request_loads_no_config_model() -> None:
    loaded = _imported_modules("meshmirror.routing.match, meshmirror.routing.sampling")
    assert "meshmirror.routing.match" in loaded
    assert [m for m in loaded if m.split(".")[0] == "pydantic"] == []
    assert [m for m in loaded if m.startswith(("meshmirror.config", "meshmirror.validate"))] == []


def test_at_most_a_dozen_modules_outside_the_stage_packages() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top


def _is_reexport_only(tree: ast.Module) -> bool:
    body = [
        n
        for n in tree.body
        if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))  # docstring
        and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    ]
    return bool(body) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body)


@pytest.mark.parametrize(
    "path",
    sorted(PACKAGE.rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_only_re_exports(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert not _is_reexport_only(tree)
    assert not any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
        for n in tree.body
    )
    if path.name == "__init__.py" and path.parent != PACKAGE:
        # A subpackage's face is its docstring: importers name the defining module.
        assert all(isinstance(n, ast.Expr) for n in tree.body), "imports in a package __init__"
