"""pyproject.toml declares every package the code imports (core needs, or the `book` extra for the
book's Sphinx extension and executor), with ranges rather than exact pins."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK_ONLY = {"optim_hunter/sphinx_ext.py", "optim_hunter/book_executor.py", "optim_hunter/bench_page.py",
             "optim_hunter/chapter.py"}  # the book's machinery: needs the `book` extra


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("optim_hunter", "__future__")}


def test_every_import_is_declared_with_a_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    book = core | {_name(r) for r in project["optional-dependencies"]["book"]}
    assert not [r for r in project["dependencies"] if "==" in r], "pin exact versions in requirements.txt only"
    distributions = importlib.metadata.packages_distributions()
    missing = []
    src = ROOT / "src"
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        declared = book if rel in BOOK_ONLY else core
        for module in _imports(path):
            dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
            if not dists & declared:
                missing.append(f"{rel}: {module} ({', '.join(sorted(dists))})")
    assert not missing, "imports pyproject.toml does not declare:\n" + "\n".join(missing)
