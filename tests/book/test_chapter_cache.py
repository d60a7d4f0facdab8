"""Each chapter's execution-cache key: its import closure against Python's own imports, the settings
only the chapters that read them carry, and a module edit that re-executes only the chapters
importing it (executor and Sphinx side)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from myst_pages import HEADER

from optim_hunter import chapters, zoo
from optim_hunter.book import book_executor, chapter_cache, sphinx_ext

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(chapter_cache.__file__).resolve().parents[1]


def test_imports_follow_relative_function_level_and_dotted_string_imports():
    known = {"optim_hunter", "optim_hunter.a", "optim_hunter.sub", "optim_hunter.sub.b", "optim_hunter.sub.c",
             "optim_hunter.d"}
    source = '''
from . import a
from .c import thing
def later():
    from optim_hunter.sub import b
FAMILY = "optim_hunter.d"
ATTRIBUTE = "optim_hunter.a.name"
import os
'''
    # `from . import a` in optim_hunter.sub.mod is optim_hunter.sub.a (no such module), not optim_hunter.a,
    # which the dotted string names; a package above each module comes with it
    assert chapter_cache.imports(source, known, "optim_hunter.sub.mod") == {
        "optim_hunter", "optim_hunter.sub", "optim_hunter.sub.c", "optim_hunter.sub.b", "optim_hunter.d",
        "optim_hunter.a"}
    assert chapter_cache.imports("from . import a", known, "optim_hunter.mod") == {"optim_hunter", "optim_hunter.a"}
    assert chapter_cache.imports("from .. import d", known, "optim_hunter.sub", is_package=True) == {
        "optim_hunter", "optim_hunter.d"}
    assert chapter_cache.imports("import numpy\nX = 'numpy.linalg'", known) == set()


def test_closure_is_transitive_and_stops_at_cycles():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": set(), "d": {"a"}}
    assert chapter_cache.closure(["a"], graph) == {"a", "b", "c"}
    assert chapter_cache.closure([], graph) == set()


@pytest.mark.parametrize("chapter", ["regressors_friedman2", "affine_recurrences"])
def test_a_chapter_s_closure_holds_every_module_python_imports_for_it(chapter):
    """The independent reference: a fresh interpreter imports what the chapter's code cells import;
    every `optim_hunter` module it then holds must be in the static closure (function-level imports
    make the closure larger, never smaller)."""
    path = REPO / "book" / f"{chapter}.md"
    modules = chapter_cache.package_modules()
    seeds = sorted(chapter_cache.imports(chapter_cache.code_cells(path), modules))
    script = ("import importlib, json, sys\n"
              f"for name in {seeds!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m == 'optim_hunter' or m.startswith('optim_hunter.'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                       text=True, timeout=300).stdout.splitlines()[-1])
    static = chapter_cache.chapter_modules(path)
    assert set(loaded) <= set(static), sorted(set(loaded) - set(static))
    assert "optim_hunter.report.claims" in static


def test_the_affine_study_is_in_the_affine_chapter_s_closure_alone():
    """As the README says: editing `chapters/affine_recurrences/` re-executes the affine chapter and no other."""
    holding = [path.stem for path in book_executor.chapters(REPO)
               if "optim_hunter.chapters.affine_recurrences.affine" in chapter_cache.chapter_modules(path)]
    assert holding == ["affine_recurrences"]


def test_no_chapter_calls_the_registry_walk_the_closure_does_not_follow():
    for path in book_executor.chapters(REPO):
        assert "declared(" not in chapter_cache.code_cells(path), path.name


def test_the_model_is_part_of_the_key_of_the_chapters_that_load_it_only(monkeypatch):
    monkeypatch.delenv("OPTIM_HUNTER_CONTRASTS", raising=False)
    docs = {p.relative_to(REPO).with_suffix("").as_posix(): p for p in book_executor.chapters(REPO)}
    before = {doc: chapter_cache.chapter_context(doc, path, "smoke") for doc, path in docs.items()}
    monkeypatch.setenv("OPTIM_HUNTER_MODEL", "attn-only-2l")
    after = {doc: chapter_cache.chapter_context(doc, path, "smoke") for doc, path in docs.items()}
    changed = {doc for doc in docs if before[doc] != after[doc]}
    assert changed == {doc for doc, record in chapters.records().items() if record.language_model}
    monkeypatch.setenv("OPTIM_HUNTER_CONTRASTS", "numeric-icl")
    with_contrast = {doc: chapter_cache.chapter_context(doc, path, "smoke") for doc, path in docs.items()}
    assert {doc for doc in docs if with_contrast[doc] != after[doc]} == {doc for doc, record in chapters.records().items() if "contrasts" in record.settings}


# --- a module edit re-executes only the chapters importing it -----------------------------------

def _cell_importing(module: str) -> str:
    # The import never runs (the cell stays instant); the key follows it all the same.
    return HEADER + f"\n# {module}\n\n```{{code-cell}}\nif False:\n    import {module}\nprint('ran')\n```\n"


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package the keys are computed from, to edit without touching the real one."""
    copy = tmp_path / "src" / "optim_hunter"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    real = chapter_cache.package_modules
    monkeypatch.setattr(chapter_cache, "package_modules", lambda package_dir=None: real(package_dir or copy))
    return copy


def _book(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pages = {"book/affine": _cell_importing("optim_hunter.chapters.affine_recurrences.affine"),
             "book/regress": _cell_importing("optim_hunter.analysis.regressors")}
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - caption: c\n    chapters:\n"
                                   + "".join(f"      - file: {name}\n" for name in pages))
    (root / "_config.yml").write_text("execute:\n  timeout: 120\n")
    (root / "intro.md").write_text("# intro\n")
    for name, text in pages.items():
        (root / f"{name}.md").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.md").write_text(text)
    return root


def test_editing_a_module_re_executes_only_the_chapters_that_import_it(tmp_path, monkeypatch, package_copy):
    root = _book(tmp_path / "book")
    monkeypatch.setattr(chapters, "records", lambda: {})
    monkeypatch.setattr(zoo, "names", lambda: [])

    def executed() -> list[str]:
        return sorted(o.task for o in book_executor.run(root, "smoke", lanes=1, progress=False))

    assert executed() == ["execute book/affine", "execute book/regress"]
    assert executed() == []
    with open(package_copy / "chapters" / "affine_recurrences" / "affine.py", "a") as module:
        module.write("\n# an edit\n")
    assert executed() == ["execute book/affine"]
    with open(package_copy / "__init__.py", "a") as module:  # runs before any module of the package
        module.write("\n# an edit\n")
    assert executed() == ["execute book/affine", "execute book/regress"]
    folders = sorted(p.relative_to(root / "_build" / ".jupyter_cache").parent.as_posix()
                     for p in (root / "_build" / ".jupyter_cache").glob("*/*"))
    assert folders == ["book-affine", "book-regress"]  # one key folder per chapter: the stale ones removed


def test_sphinx_re_reads_only_the_pages_whose_key_changed(tmp_path, package_copy):
    root = _book(tmp_path / "book")
    (root / "claims.md").write_text("# claims\n")
    docs = {"intro": root / "intro.md", "claims": root / "claims.md",
            "book/affine": root / "book" / "affine.md", "book/regress": root / "book" / "regress.md"}
    env = SimpleNamespace(found_docs=set(docs), doc2path=lambda doc: str(docs[doc]))
    outdated = lambda: sphinx_ext.outdated_pages(env)  # noqa: E731
    assert outdated() == sorted(docs)
    assert outdated() == []
    with open(package_copy / "chapters" / "affine_recurrences" / "affine.py", "a") as module:
        module.write("\n# an edit\n")
    # the chapter importing it, and the pages that execute nothing (their settings tables and
    # claims follow the whole package; reading them costs no execution)
    assert outdated() == ["book/affine", "claims", "intro"]
    assert outdated() == []
