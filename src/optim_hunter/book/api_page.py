"""The API page, generated from the package: `{api-reference}` documents every module, layer by layer.

Nothing is listed by hand: the directive walks `optim_hunter` and emits one autodoc entry per
module, under its layer (each layer's package docstring first). The command line (`optim-hunter
--help`) and the Sphinx extension (the Performance page) are documented where they are used. Our
docstrings are plain text, not reStructuredText: `plain_docstring` shows them as such.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGE = "optim_hunter"
LAYERS = ("core", "data", "zoo", "analysis", "report", "chapters", "book")
ELSEWHERE = {f"{PACKAGE}.book.cli", f"{PACKAGE}.book.sphinx_ext"}  # `--help`, and the Performance page
# scikit-learn adds these to every estimator: not ours to document
SKLEARN_REQUESTS = "set_fit_request, set_predict_request, set_score_request"


def modules_by_layer() -> dict[str, list[str]]:
    """Every documented module of the package (dotted names), under its layer, in walk order."""
    package = importlib.import_module(PACKAGE)
    out: dict[str, list[str]] = {layer: [] for layer in LAYERS}
    for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
        layer = info.name.split(".")[1]
        if info.name in ELSEWHERE or info.name == f"{PACKAGE}.{layer}":
            continue
        if layer not in out:
            raise ValueError(f"{info.name} is in no layer of the API page: add {layer!r} to api_page.LAYERS")
        out[layer].append(info.name)
    return out


def reference_rst(layers: tuple[str, ...] = LAYERS) -> list[str]:
    """The page's reStructuredText: per layer, a rubric, its package's docstring, then its modules."""
    lines: list[str] = []
    for layer, modules in modules_by_layer().items():
        if layer not in layers:
            continue
        lines += [f".. rubric:: {PACKAGE}.{layer}", "", f".. automodule:: {PACKAGE}.{layer}", ""]
        for module in modules:
            lines += [f".. automodule:: {module}", "   :members:", f"   :exclude-members: {SKLEARN_REQUESTS}", ""]
    return lines


class ApiReferenceDirective(SphinxDirective):
    """`{api-reference}`: autodoc of every module of the package, grouped by layer (or of the layers
    named as arguments, e.g. `{api-reference} core data`)."""

    has_content = False
    optional_arguments = len(LAYERS)

    def run(self) -> list[nodes.Node]:
        layers = tuple(self.arguments) or LAYERS
        unknown = [layer for layer in layers if layer not in LAYERS]
        if unknown:
            raise self.error(f"api-reference: no layer {', '.join(unknown)}; the layers are {', '.join(LAYERS)}")
        # The page is MyST: its parser reads the reStructuredText through an eval-rst block.
        text = ["```{eval-rst}", *reference_rst(layers), "```"]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(text, source="api-reference"), container)
        return container.children


def plain_docstring(lines: list[str]) -> list[str]:
    """Our docstrings are plain text, not reStructuredText: show their indented tables and
    formulas verbatim (as literal blocks) and their `|x|` as text, for the API page."""
    out: list[str] = []
    for i, line in enumerate(lines):
        indented = line.startswith((" ", "\t")) and line.strip()
        opens = indented and (i == 0 or not lines[i - 1].strip() or lines[i - 1].rstrip().endswith(":"))
        in_block = bool(out) and out[-1].startswith("    ") and indented
        if opens and not in_block:
            if out and out[-1].strip():
                out.append("")
            out.extend(["::", ""])
        out.append("    " + line if indented else line.replace("|", "\\|"))
    return out


def _autodoc_docstring(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if name.startswith(PACKAGE):
        lines[:] = plain_docstring(lines)


def setup(app: Sphinx) -> None:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", _autodoc_docstring)
    app.add_directive("api-reference", ApiReferenceDirective)
