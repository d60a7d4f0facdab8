"""Every figure a chapter shows is numbered, captioned and labelled (`optim_hunter.book.numbered_outputs`).

The chapters are read as the book reads them (myst-nb's reader gives each code cell's metadata);
which cells show figures is found independently, by a plain scan of the Markdown for the calls that
draw one (`plots.show(...)`, the circuitsvis views). No chapter is executed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from myst_nb.core.read import read_myst_markdown_notebook

BOOK = Path(__file__).resolve().parents[2] / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if p.read_text(encoding="utf-8").startswith("---\njupytext"))
# A call that draws a figure: plots.show, the circuitsvis views (attention_heads and the studies'
# show/show_heads/show_attention methods, which call it).
DRAWS = re.compile(r"\bplots\.show\(|\bplots\.attention_heads\(|\.show\(\d|\.show_heads\(|\.show_attention\(")
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```$", re.S | re.M)


def scanned(path: Path) -> list[int]:
    """Per code cell (in order), how many figure-drawing calls its source holds: a plain text scan."""
    counts = []
    for body in CELL.findall(path.read_text(encoding="utf-8")):
        if body.startswith("---\n"):
            body = body.split("\n---\n", 1)[1]
        source = "\n".join(line for line in body.splitlines() if not line.startswith(":"))
        counts.append(len(DRAWS.findall(source)))
    return counts


def cells(path: Path) -> list[dict]:
    notebook = read_myst_markdown_notebook(path.read_text(encoding="utf-8"))
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_scan_finds_the_chapters_and_their_figures():
    assert len(CHAPTERS) >= 9
    assert sum(sum(1 for n in scanned(p) if n) for p in CHAPTERS) >= 40  # the book's figure cells


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_cell_has_a_caption_and_a_name(path):
    counts, code = scanned(path), cells(path)
    assert len(counts) == len(code), "the scan and myst-nb disagree on the code cells"
    for i, (n, cell) in enumerate(zip(counts, code)):
        entries = cell.metadata.get("figures") or []
        where = f"{path.name}, code cell {i + 1}: {cell.source.splitlines()[-1][:60]!r}"
        if not n:
            assert not entries, f"{where} declares figures but draws none"
            continue
        assert entries, f"{where} draws a figure without a caption (cell metadata `figures`)"
        # One entry per figure, or one for all of them: numbered_outputs' rule. A loop draws as many
        # figures as its list holds, which only the build knows (a count that does not fit fails it).
        loop = re.search(r"^\s*for\b", cell.source, re.M)
        assert len(entries) == 1 or loop or len(entries) == n, f"{where}: {len(entries)} entries, {n} calls"
        for entry in entries:
            assert str(entry.get("caption", "")).strip().endswith("."), f"{where}: caption {entry!r}"
            assert re.fullmatch(r"fig-[a-z0-9]+(-[a-z0-9]+)+", entry["name"]), f"{where}: name {entry['name']!r}"


def _entries(key: str) -> list[tuple[str, dict]]:
    return [(p.stem, e) for p in CHAPTERS for cell in cells(p) for e in cell.metadata.get(key) or []]


def test_names_are_unique_across_the_book_and_tables_are_named_as_tables():
    names = [e["name"] for _, e in _entries("figures") + _entries("tables")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
    for stem, entry in _entries("tables"):
        assert re.fullmatch(r"tab-[a-z0-9]+(-[a-z0-9]+)+", entry["name"]), (stem, entry)
        assert str(entry.get("caption", "")).strip().endswith("."), (stem, entry)


def test_every_numref_names_a_figure_or_table_that_every_build_shows():
    always = {e["name"] for _, e in _entries("figures") + _entries("tables") if not e.get("optional")}
    for path in sorted(BOOK.glob("*.md")):
        for target in re.findall(r"\{numref\}`(?:[^`<]*<)?([^`>]+)>?`", path.read_text(encoding="utf-8")):
            assert target in always, f"{path.name}: {{numref}} to {target!r}, which no cell always shows"


def test_every_doc_link_names_a_page_and_every_ref_a_label():
    pages = {p.stem for p in BOOK.glob("*.md")}
    labels = {m for p in BOOK.glob("*.md") for m in re.findall(r"^\(([\w-]+)\)=$", p.read_text(encoding="utf-8"), re.M)}
    for path in sorted(BOOK.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", text):
            assert target in pages, f"{path.name}: {{doc}} to {target!r}, not a page of book/"
        for target in re.findall(r"\{ref\}`(?:[^`<]*<)?([^`>]+)>?`", text):
            assert target in labels, f"{path.name}: {{ref}} to {target!r}, no such label"


def executed_notebooks() -> list[Path]:
    """Executed chapters of an earlier build: myst-nb's copies and jupyter-cache's, under `_build`
    (or the folder `OPTIM_HUNTER_EXECUTED` names)."""
    import os

    root = Path(os.environ.get("OPTIM_HUNTER_EXECUTED") or BOOK.parent / "_build")
    return sorted(root.glob("jupyter_execute/**/*.ipynb")) + sorted(root.glob(".jupyter_cache/**/base.ipynb"))


def test_declarations_fit_the_outputs_of_executed_chapters():
    """Where a build has executed chapters, every cell's declared figures and tables fit the outputs
    it showed there (the rule the build applies with -W), without building anything."""
    import nbformat

    from optim_hunter.book import numbered_outputs

    executed = {}
    for path in executed_notebooks():
        notebook = nbformat.read(path, as_version=4)
        executed[tuple(c.source for c in notebook.cells if c.cell_type == "code")] = notebook
    checked, problems = 0, []
    for path in CHAPTERS:
        code = cells(path)
        notebook = executed.get(tuple(c.source for c in code))
        if notebook is None:
            continue
        checked += 1
        ran = [c for c in notebook.cells if c.cell_type == "code"]
        for i, (cell, out) in enumerate(zip(code, ran)):
            kinds = numbered_outputs.output_kinds(out)
            for key in (numbered_outputs.FIGURES, numbered_outputs.TABLES):
                entries = cell.metadata.get(key) or []
                wrong = entries and numbered_outputs.problem(key, entries, kinds.count(key))
                if wrong:
                    problems.append(f"{path.name}, code cell {i + 1}: {wrong}")
    if not checked:
        pytest.skip("no executed chapters under _build (a build, or OPTIM_HUNTER_EXECUTED, provides them)")
    assert not problems, "\n".join(problems)
