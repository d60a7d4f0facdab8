"""The package's layout holds: its layers (import-linter), no import hidden in a function to dodge
one, short functions, short modules, every chapter defined by its record and every claim declared by
a chapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

from optim_hunter import chapters
from optim_hunter.report import claims

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "optim_hunter"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600

# Imports of the package inside a function, each with why it is there (none dodges a layer: the
# layers contract would catch that; these keep start-up light or break a cycle inside one layer).
_CLI = "start-up: `optim-hunter --help`, `datasets`, `regressors` import no torch (3.4 s against 6.8 s)"
FUNCTION_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    ("optim_hunter.core.settings", "run_context"): "settings stays free of torch: the CLI and Sphinx read it",
    **{("optim_hunter.book.cli", name): _CLI for name in (
        "_cmd_eval", "_with_language_model", "_cmd_models", "_cmd_train", "_trainable", "_cmd_execute")},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_layers_hold():
    """book > chapters > zoo | report > analysis > data > core, as pyproject.toml declares them."""
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def _function_imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[str, str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            names = []
            if isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                names = [inner.module]
            elif isinstance(inner, ast.ImportFrom) and inner.level > 0:
                names = ["(relative)"]
            elif isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            if any(n == "optim_hunter" or n.startswith("optim_hunter.") or n == "(relative)" for n in names):
                found.append((_name(path, root), node.name, inner.lineno))
    return found


def test_no_package_import_hides_inside_a_function():
    found = [f for path in _modules() for f in _function_imports(path)]
    unexplained = [f"{module}.{function} (line {line})" for module, function, line in found
                   if (module, function) not in FUNCTION_IMPORTS_ALLOWED]
    assert not unexplained, f"import at module level, or say why in FUNCTION_IMPORTS_ALLOWED: {unexplained}"


def test_the_function_import_scan_sees_one(tmp_path):
    module = tmp_path / "optim_hunter" / "x.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from optim_hunter.core import settings\n    return settings\n")
    assert _function_imports(module, tmp_path) == [("optim_hunter.x", "f", 2)]


def _long_functions(path: Path) -> list[tuple[str, int]]:
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_is_longer_than_sixty_lines():
    long = {f"{_name(path)}.{name}": lines for path in _modules() for name, lines in _long_functions(path)}
    assert not long, f"split these (lines, def to last line): {long}"


def test_no_module_is_longer_than_six_hundred_lines():
    long = {_name(path): n for path in _modules() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules: {long}"


def test_the_length_scan_counts_a_function_from_def_to_its_last_line(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n" + "    x = 1\n" * 60 + "\n\ndef g():\n    return 1\n")
    assert _long_functions(module) == [("f", 61)]


def test_every_chapter_package_has_its_record_and_its_notebook():
    records = chapters.records()
    packages = sorted(p.parent.name for p in (PACKAGE / "chapters").glob("*/__init__.py"))
    assert sorted(r.name for r in records.values()) == packages
    for doc in records:
        assert (ROOT / f"{doc}.md").exists(), f"{doc} has a record but no notebook"


def test_every_declared_claim_belongs_to_one_chapter():
    by_chapter = {doc: set(record.claims()) for doc, record in chapters.records().items()}
    # (claims a test declares, outside the package, do not count)
    declared = {cid for cid, spec in claims.declared().items() if spec.module.startswith("optim_hunter.")}
    owned = [cid for ids in by_chapter.values() for cid in ids]
    assert len(owned) == len(set(owned)), "a claim declared by two chapters"
    assert set(owned) == declared, f"declared outside any chapter: {sorted(declared - set(owned))}"


@pytest.mark.parametrize("bad", ["model", "nothing"])
def test_a_record_reads_only_run_settings_it_knows(bad):
    if bad == "model":
        assert chapters.Chapter("x", reads=("model",)).settings == ("model",)
    else:
        with pytest.raises(ValueError, match="reads"):
            chapters.Chapter("x", reads=("nothing",))
