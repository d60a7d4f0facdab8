"""Each chapter's execution-cache key: a chapter is executed again only when something it reads changed.

A chapter's executed outputs depend on its code cells (jupyter-cache matches them), the profile, the
package code it can run, and, for some chapters, the language model's settings. Its key holds:

  * `profile`;
  * `code`: a hash of the chapter's import closure inside `optim_hunter` (`chapter_modules`): the
    modules its code cells import, then every module those import, at module level or inside a
    function (which functions a chapter calls is not followed: the closure is a superset), the
    modules named by a dotted string (the zoo imports each model family by name), and the
    packages above each (their `__init__` runs first). `claims.declared()` imports the whole
    package by walking it; no chapter calls it (a test checks), so that walk is not followed;
  * `model`, `contrasts`, `device` and `dtype` only for the chapters that read them (their
    `Chapter` record's `settings`): the language-model chapters, and the models chapter, which
    loads the pretrained model and shows the contrasts.

Every chapter has its own jupyter-cache folder, `_build/.jupyter_cache/<chapter>/<key>`, read by both
`optim_hunter.book.book_executor` (which fills it) and `optim_hunter.book.sphinx_ext` (which points myst-nb at
it page by page). Editing `chapters/affine_recurrences/affine.py` thus re-executes the chapters whose closure holds it and
no other; a chapter's older key folders are removed when its key changes.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from optim_hunter import chapters, zoo
from optim_hunter.core import settings

PACKAGE = "optim_hunter"
CACHE_DIR = ".jupyter_cache"
CPU_RUN = {"device": "cpu", "dtype": "float32"}  # the book's machine: left out of folder names
_DOTTED = re.compile(rf"^{PACKAGE}(\.[A-Za-z_]\w*)+$")


def package_modules(package_dir: Path | None = None) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__.py`)."""
    if package_dir is None:
        package_dir = Path(__file__).resolve().parent.parent
    out: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(source: str, known: Iterable[str], module: str = "__main__", is_package: bool = False) -> set[str]:
    """The modules of `known` that `source` (the text of `module`) imports anywhere in its body, or
    names by a dotted string, with the packages above each."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)  # kept where it is a submodule
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value):
            named.add(node.value)
    known = set(known)
    out = set()
    for name in named:
        parts = name.split(".")
        out.update(prefix for i in range(1, len(parts) + 1) if (prefix := ".".join(parts[:i])) in known)
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each module's imports inside the package (`imports`)."""
    return {name: imports(path.read_text(), modules, name, path.name == "__init__.py")
            for name, path in modules.items()}


def closure(seeds: Iterable[str], graph: Mapping[str, set[str]]) -> set[str]:
    """`seeds` and everything they import, directly or not."""
    seen: set[str] = set()
    todo = list(seeds)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def code_cells(path: Path) -> str:
    """The chapter's code cells as one Python text, as myst-nb reads them (IPython magics and shell
    lines dropped: they import nothing from the package)."""
    from myst_nb.core.read import read_myst_markdown_notebook

    notebook = read_myst_markdown_notebook(path.read_text(), path=path)
    lines = [line for cell in notebook.cells if cell.cell_type == "code" for line in cell.source.splitlines()
             if not line.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def chapter_modules(path: Path, modules: Mapping[str, Path] | None = None) -> list[str]:
    """The package modules chapter `path` can run: its import closure, sorted."""
    modules = package_modules() if modules is None else modules
    seeds = imports(code_cells(path), modules)
    return sorted(closure(seeds, import_graph(modules)))


def code_hash(names: Iterable[str], modules: Mapping[str, Path] | None = None) -> str:
    """12 hex digits of the hash of these modules' names and sources."""
    modules = package_modules() if modules is None else modules
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + modules[name].read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def chapter_context(doc: str, path: Path, profile: str | None = None) -> dict[str, str]:
    """What chapter `doc` (its docname; its file `path`) executes with: the cache key's parts."""
    context = {"profile": settings.profile(profile)}
    read = chapters.record(doc).settings
    if "model" in read:
        context["model"] = zoo.model_name()
    if "contrasts" in read:
        context["contrasts"] = ",".join(zoo.contrasts())
    if "device" in read or "dtype" in read:
        context.update({k: v for k, v in settings.run_context().items() if k in read})
    context["code"] = code_hash(chapter_modules(path))
    return context


def cache_path(build: Path, doc: str, context: Mapping[str, str]) -> Path:
    """Chapter `doc`'s jupyter-cache in build folder `build` for `context`; the chapter's folders for
    the same settings and other code are removed (outputs are never served for code that changed)."""
    root = Path(build) / CACHE_DIR
    for old in root.glob("*__*"):  # a whole-book cache of the layout before per-chapter keys
        shutil.rmtree(old, ignore_errors=True)
    base = root / settings.slug(doc.replace("/", "-"))
    run = "" if all(context.get(k, v) == v for k, v in CPU_RUN.items()) else \
        "-".join(context[k] for k in ("device", "dtype") if k in context)
    parts = [context["profile"], context.get("model"), context.get("contrasts"), run]
    name = settings.slug("__".join(p for p in parts if p))
    for stale in base.glob(f"{name}__*"):
        if stale.name != f"{name}__{context['code']}":
            shutil.rmtree(stale, ignore_errors=True)
    return base / f"{name}__{context['code']}"
