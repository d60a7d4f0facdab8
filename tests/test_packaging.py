"""pyproject.toml declares every package the code imports (core needs, or the `book` extra for the
book's Sphinx extension and executor), with ranges rather than exact pins; `pip install .` into a new
virtualenv that holds only what is declared imports every module."""

import ast
import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK_ONLY = {"optim_hunter/book/sphinx_ext.py", "optim_hunter/book/book_executor.py", "optim_hunter/book/bench_page.py",
             "optim_hunter/report/prose.py", "optim_hunter/book/chapter_cache.py", "optim_hunter/book/api_page.py",
             "optim_hunter/book/numbered_outputs.py"}  # the book's machinery: needs the `book` extra


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


# --- `pip install .` into a new virtualenv, offline ------------------------------------------------


def _requirements(dist: importlib.metadata.Distribution, extras: frozenset[str]):
    from packaging.requirements import Requirement

    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            yield req


def _closure(roots) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that `roots` (requirement strings) need, transitively, each one
    checked against its version range; a requirement nothing installed satisfies fails here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(r) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(req.name)  # PackageNotFoundError: not installed
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} but {dist.version} is installed"
        found[key[0]] = dist
        todo.extend(_requirements(dist, frozenset(req.extras)))
    return found


def _link_into(view: Path, dists) -> None:
    """Symlink the top-level files and folders of `dists` (their packages and .dist-info) into the
    folder `view`: a site folder holding those distributions and nothing else."""
    for dist in dists:
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue  # scripts, and path hooks (the book venv's editable optim_hunter)
            source = Path(dist.locate_file(top))
            if source.exists() and not (view / top).exists():
                (view / top).symlink_to(source)


INSTALLED = """
import importlib, json, pkgutil, sys
import optim_hunter
skip = set(sys.argv[1].split(","))
def fail(name):
    raise ImportError(f"{name} does not import")
names = sorted(m.name for m in pkgutil.walk_packages(optim_hunter.__path__, "optim_hunter.", onerror=fail))
for name in names:
    if name not in skip:
        importlib.import_module(name)
print(json.dumps({"file": optim_hunter.__file__, "modules": ["optim_hunter"] + names}))
"""


@pytest.mark.slow
def test_pip_install_in_a_new_virtualenv_imports_every_module(tmp_path):
    """`pip install .` of a copy of the repository (not editable) into a new virtualenv, offline.
    The virtualenv sees only the distributions pyproject.toml declares (and what they declare in
    turn), linked from this environment: every declared range must be met, the build needs
    nothing undeclared, and every module, imported from the installed copy, imports only what is
    declared (the core modules with the core needs, the book's machinery once `.[book]` is in)."""
    import json
    import shutil
    import subprocess
    import sysconfig

    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", copy / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    view = tmp_path / "declared"  # the declared distributions, linked from this environment
    view.mkdir()
    (site / "declared.pth").write_text(f"{view}\n")
    assert Path(sysconfig.get_path("purelib")) != site
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_FIND_LINKS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def pip_install(target: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index",
             "--no-build-isolation", target], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def import_all(skip: set[str]) -> dict:
        result = subprocess.run([python, "-c", INSTALLED, ",".join(sorted(skip))], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    book_only = {rel.removesuffix(".py").replace("/", ".") for rel in BOOK_ONLY}
    src = ROOT / "src"  # the modules, as the source tree has them
    expected = sorted(".".join(p for p in path.relative_to(src).with_suffix("").parts if p != "__init__")
                      for path in (src / "optim_hunter").rglob("*.py"))

    _link_into(view, _closure(project["dependencies"] + pyproject["build-system"]["requires"]).values())
    pip_install(str(copy))
    core = import_all(book_only)
    assert Path(core["file"]).is_relative_to(site), f"optim_hunter imported from {core['file']}, not the venv"
    assert sorted(core["modules"]) == expected  # every module of the source tree was installed
    assert (Path(core["file"]).parent / "book" / "static" / "optim_hunter.css").is_file(), "the stylesheet was not installed"

    _link_into(view, _closure(project["optional-dependencies"]["book"]).values())
    pip_install(f"{copy}[book]")
    book = import_all(set())
    assert Path(book["file"]).is_relative_to(site) and sorted(book["modules"]) == expected
