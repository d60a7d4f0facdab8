"""Numbered, captioned, labelled figures and tables made from code-cell outputs.

myst-nb can wrap a cell's outputs in a figure (cell metadata `mystnb: figure:`), but it wraps every
display output of the cell under the one name: a cell that shows two figures, or a table beside a
figure, gets two targets of the same name. Here a code cell declares what it shows, in order:

    ```{code-cell} ipython3
    ---
    tags: [hide-input]
    figures:
      - name: fig-affine-dla-next
        caption: "Direct attribution of each head's output to the next term a_(m+1), ..."
      - name: fig-affine-dla-step
        caption: "Direct attribution of each head's output to the step a_(m+1) − a_m, ..."
    tables:
      - name: tab-affine-dla
        caption: "..."
    ---
    ```

A read transform (run before Sphinx collects the labels) wraps the cell's figure outputs (Plotly or
circuitsvis snippets from `optim_hunter.report.plots`) in numbered `figure` nodes and its table outputs
(HTML holding a `<table>`: a DataFrame, a Styler) in numbered `output_table` nodes (numbered as
tables). As many entries as outputs: one each, in order; a single entry for several outputs (a
loop over figures): one figure holding them all. Any other count is a warning, which fails a `-W`
build: a caption never sits on an output it was not written for. `{numref}` then gives "Fig. 3" /
"Table 2" (`numfig`, on in Jupyter Book; numbered through the whole book). Entries marked `optional: true` may
find no output at all (a cell that shows its figures only when a contrast model is in the build);
they are then left out, so prose must not `{numref}` them.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from optim_hunter.report.plots import CIRCUITSVIS_MARK, PLOTLY_MARK

logger = logging.getLogger(__name__)

FIGURES = "figures"  # cell metadata keys
TABLES = "tables"


class output_table(nodes.General, nodes.Element):
    """A numbered table made of a cell's HTML output: a caption, then the output."""


def _html(bundle: nodes.Element) -> str:
    return "".join(raw.astext() for raw in bundle.findall(nodes.raw) if "html" in raw.get("format", "").split())


def html_kind(text: str) -> str | None:
    """'figures' for a Plotly/circuitsvis snippet, 'tables' for HTML holding a table, else None."""
    if PLOTLY_MARK in text or CIRCUITSVIS_MARK in text:
        return FIGURES
    if "<table" in text:
        return TABLES
    return None


def kind(bundle: nodes.Element) -> str | None:
    """`html_kind` of a myst-nb output (a mime bundle node)."""
    return html_kind(_html(bundle))


def output_kinds(cell: Any) -> list[str | None]:
    """`html_kind` of each output of an executed notebook cell (nbformat) that the page shows: glued
    values (myst-nb's `scrapbook` outputs) are not shown."""
    return [html_kind("".join(output.get("data", {}).get("text/html", "")))
            for output in cell.get("outputs", [])
            if output.get("output_type") in ("display_data", "execute_result")
            and "scrapbook" not in output.get("metadata", {})]


def problem(key: str, entries: list[dict[str, Any]], n_outputs: int) -> str | None:
    """Why `entries` cannot label `n_outputs` outputs of kind `key`, or None when they can: as many
    entries as outputs, or one entry for any number of them, or optional entries and no output."""
    if len(entries) == n_outputs or (len(entries) == 1 and n_outputs):
        return None
    if not n_outputs and all(entry.get("optional") for entry in entries):
        return None
    return f"the cell declares {len(entries)} {key} ({', '.join(e['name'] for e in entries)}) but shows {n_outputs}"


def caption(text: str) -> nodes.caption:
    """A caption from plain text, `backticks` as code."""
    node = nodes.caption(text)
    for i, part in enumerate(re.split(r"`([^`]+)`", text)):
        if part:
            node += nodes.literal(part, part) if i % 2 else nodes.Text(part)
    return node


def declared(cell: nodes.Element, key: str) -> list[dict[str, Any]]:
    """The entries a myst-nb cell node declares under `key` (none: []); ValueError if malformed."""
    entries = (cell.get("cell_metadata") or {}).get(key) or []
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and str(e.get("caption", "")).strip() for e in entries
    ):
        raise ValueError(f"cell metadata `{key}` must be a list of {{name, caption}} (got {entries!r})")
    return entries


def number_outputs(document: nodes.document, cell: nodes.Element, key: str,
                   entries: list[dict[str, Any]]) -> str | None:
    """Wrap the outputs of kind `key` of a myst-nb cell node in numbered, labelled nodes, one per
    entry (or all in one for a single entry); the problem, when the counts do not fit, else None."""
    outputs = [n for n in cell.findall(nodes.container) if n.get("nb_element") == "mime_bundle" and kind(n) == key]
    wrong = problem(key, entries, len(outputs))
    if wrong:
        return wrong
    # One entry per output, or one for them all; none at all (optional entries): nothing to number.
    groups = [[output] for output in outputs] if len(entries) == len(outputs) else [outputs] if outputs else []
    for entry, group in zip(entries, groups):
        node = nodes.figure() if key == FIGURES else output_table()
        node.source, node.line = cell.source, cell.line
        group[0].replace_self(node)
        for output in group[1:]:
            output.parent.remove(output)
        label = caption(str(entry["caption"]).strip())
        node.extend(group + [label] if key == FIGURES else [label] + group)
        node["names"].append(nodes.fully_normalize_name(entry["name"]))
        document.note_explicit_target(node, node)
    return None


class NumberOutputs(SphinxTransform):
    """Wrap the outputs a cell declares under `figures` / `tables` in numbered, labelled nodes."""

    default_priority = 800  # before SphinxDomains (850) collects the labels

    def apply(self, **kwargs: Any) -> None:
        for cell in list(self.document.findall(nodes.container)):
            if cell.get("nb_element") != "cell_code":
                continue
            for key in (FIGURES, TABLES):
                try:
                    entries = declared(cell, key)
                except ValueError as error:
                    logger.warning(str(error), location=cell)
                    continue
                wrong = number_outputs(self.document, cell, key, entries) if entries else None
                if wrong:
                    logger.warning(wrong, location=cell)


def visit_output_table(self: Any, node: output_table) -> None:
    self.body.append(self.starttag(node, "div", CLASS="optim-hunter-table"))


def depart_output_table(self: Any, node: output_table) -> None:
    self.body.append("</div>\n")


def _skip(self: Any, node: nodes.Node) -> None:
    pass


def setup(app: Sphinx) -> None:
    """Called from `optim_hunter.book.sphinx_ext.setup`."""
    app.add_enumerable_node(output_table, "table", html=(visit_output_table, depart_output_table),
                            latex=(_skip, _skip), text=(_skip, _skip))
    app.add_transform(NumberOutputs)
