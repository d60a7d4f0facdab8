"""Figures and tables from code-cell outputs get numbers, captions and labels (`optim_hunter.book.numbered_outputs`).

A tiny Jupyter Book is built: a cell showing two Plotly figures (two entries), a cell looping over
two figures (one entry: one figure holding both), a cell showing a DataFrame (a table entry), and
prose whose `{numref}`s must resolve to "Fig. 1", "Fig. 2", "Table 1". The book's stylesheet must
be shipped and linked. The wrapping itself is also checked on hand-made doctrees (counts that do not
fit are refused).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docutils import nodes
from docutils.frontend import get_default_settings
from docutils.parsers.rst import Parser
from docutils.utils import new_document
from myst_pages import CONFIG, HEADER

from optim_hunter.book import numbered_outputs, sphinx_ext
from optim_hunter.report.plots import PLOTLY_MARK

TOC = "format: jb-book\nroot: page\nchapters:\n  - file: claims\n"
CLAIMS = "# Claims\n\n```{claims-table}\n:sources: sources.yml\n```\n"
SOURCES = """\
- id: s004.long
  seed: "004"
  claim: a source claim whose statement is long enough to need several lines of the table
  source_value: 42
  quote: a quotation from the source that also runs on for a while, as the source studies' quotes do
  measured_by: ["tiny.{what}"]
"""
PAGE = HEADER + """
# Figures

The two curves are {numref}`fig-tiny-up` and {numref}`fig-tiny-down`; both views of the loop are
{numref}`fig-tiny-loop`, and the numbers are in {numref}`tab-tiny-numbers`.

```{code-cell} ipython3
---
tags: [hide-input]
figures:
  - name: fig-tiny-up
    caption: A rising line, `plots.show` in a book build.
  - name: fig-tiny-down
    caption: A falling line.
---
import pandas as pd
import plotly.graph_objects as go
from optim_hunter.report import plots

plots.show(go.Figure(go.Scatter(x=[1, 2, 3], y=[1, 2, 3])))
print("between the figures")
plots.show(go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 2, 1])))
```

```{code-cell} ipython3
---
figures:
  - name: fig-tiny-loop
    caption: Two bar charts from one loop, as one figure.
---
for height in (1, 2):
    plots.show(go.Figure(go.Bar(x=["a"], y=[height])))
```

```{code-cell} ipython3
---
tables:
  - name: tab-tiny-numbers
    caption: Three numbers and their squares.
---
result = plots_of_a_very_long_line_that_must_wrap = pd.DataFrame({"x": [1, 2, 3], "x squared": [1, 4, 9]}); result
```

A claim with long words, so that the Claims page's table is wider than the column:

```{code-cell} ipython3
from optim_hunter.report import claims
from optim_hunter.core import settings

LONG = claims.ClaimSpec("tiny.a_claim_identifier_long_enough_to_widen_its_column_of_the_claims_table",
                        "a claim whose statement runs on " * 12, "004", 42.0, test=claims.between(40, 44))
claims.record_all(LONG.measure(42.0, chapter="page", profile=settings.profile(),
                               interval=claims.bootstrap([41.0, 42.0, 43.0], units="draws")))
```
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from test_sphinx_ext import build

    root = tmp_path_factory.mktemp("numbered")
    (root / "_config.yml").write_text(CONFIG)
    (root / "_toc.yml").write_text(TOC)
    (root / "page.md").write_text(PAGE)
    (root / "claims.md").write_text(CLAIMS)
    (root / "sources.yml").write_text(SOURCES)
    result = build(root, "smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "_build" / "html"


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


@pytest.mark.slow
def test_numref_resolves_to_numbered_captioned_figures_and_tables(site):
    page = (site / "page.html").read_text()
    prose = _text(page[page.index("The two curves"):page.index("tab-tiny-numbers") + 200])
    assert "Fig. 1 and Fig. 2" in prose and "are Fig. 3" in prose and "in Table 1" in prose, prose
    figures = re.findall(r'<figure[^>]*id="(fig-tiny-[a-z]+)"(.*?)</figure>', page, flags=re.S)
    assert [name for name, _ in figures] == ["fig-tiny-up", "fig-tiny-down", "fig-tiny-loop"]
    body = dict(figures)
    assert body["fig-tiny-up"].count(PLOTLY_MARK) == 1 and body["fig-tiny-loop"].count(PLOTLY_MARK) == 2
    assert "Fig. 1 A rising line, plots.show in a book build." in _text(body["fig-tiny-up"])
    assert "between the figures" not in body["fig-tiny-up"] + body["fig-tiny-down"]  # only the outputs declared
    start = page.index('id="tab-tiny-numbers"')
    table = page[start:page.index("</div>", page.index("</table>", start))]
    assert "Table 1 Three numbers and their squares." in _text(table) and "x squared" in table


@pytest.mark.slow
def test_the_stylesheet_is_shipped_and_linked(site):
    shipped = site / "_static" / "optim_hunter" / "optim_hunter.css"
    assert shipped.read_text() == sphinx_ext.STYLESHEET.read_text()
    page = (site / "page.html").read_text()
    assert re.search(r'<link[^>]+href="_static/optim_hunter/optim_hunter\.css[^"]*"', page)
    css = shipped.read_text()
    assert re.search(r"div\.cell_input[^{]*pre\s*{[^}]*white-space:\s*pre-wrap", css)
    assert re.search(r"table\.optim-hunter-claims[^{]*{[^}]*overflow-x:\s*auto", css, flags=re.S)


@pytest.mark.slow
def test_no_horizontal_overflow_of_the_content_column_at_1400px(site):
    """In headless Chromium 1,400 px wide, no element of the article runs past its column (tables
    may be wider inside their scrolling block; a Plotly title longer than its plot is clipped by its
    SVG): the long code line wraps. Skipped where chromium is missing, as the other browser tests."""
    import functools
    import http.server
    import subprocess
    import threading

    from test_sphinx_ext import chromium

    browser = chromium()
    script = """<script>window.addEventListener('load', () => setTimeout(() => {
      const column = document.querySelector('.bd-article-container') || document.querySelector('main');
      const limit = column.getBoundingClientRect().right + 1;
      const wide = [...column.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > limit
        && !e.parentElement.closest('table, svg, .optim-hunter-scroll, .optim-hunter-table'))
        .map(e => e.tagName + '.' + e.className);
      if (column.scrollWidth > column.clientWidth + 1) wide.push('column scrolls sideways');
      if (document.documentElement.scrollWidth > window.innerWidth + 1) wide.push('page scrolls sideways');
      document.body.setAttribute('data-overflow', wide.join('|') || 'none');
    }, 3000));</script>"""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found = {}
    try:
        for name in ("page", "claims"):
            page = (site / f"{name}.html").read_text()
            (site / f"{name}-overflow.html").write_text(page.replace("</body>", script + "</body>"))
            result = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1400,1000",
                 f"--user-data-dir={site.parent / 'chromium-overflow'}", "--virtual-time-budget=15000",
                 "--dump-dom", f"http://127.0.0.1:{server.server_address[1]}/{name}-overflow.html"],
                capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            marker = re.search(r'data-overflow="([^"]*)"', result.stdout)
            found[name] = marker and marker.group(1)
    finally:
        server.shutdown()
    assert found == {"page": "none", "claims": "none"}, found


# --- the wrapping on hand-made doctrees ---------------------------------------------------------


def _cell(metadata: dict, outputs: list[str]) -> tuple[nodes.document, nodes.container]:
    document = new_document("test", get_default_settings(Parser))
    cell = nodes.container(nb_element="cell_code", cell_metadata=metadata)
    out = nodes.container(nb_element="cell_code_output")
    for html in outputs:
        bundle = nodes.container(nb_element="mime_bundle")
        bundle += nodes.container("", nodes.raw("", html, format="html"), mime_type="text/html")
        out += bundle
    cell += out
    document += cell
    return document, cell


PLOT = f'<div class="{PLOTLY_MARK}"></div>'


@pytest.mark.parametrize("declared, shown, figures", [(1, 1, 1), (2, 2, 2), (1, 3, 1)])
def test_entries_and_figures_pair_up(declared, shown, figures):
    entries = [{"name": f"fig-{i}", "caption": f"Figure {i}."} for i in range(declared)]
    document, cell = _cell({"figures": entries}, [PLOT] * shown + ["<table></table>"])
    assert numbered_outputs.number_outputs(document, cell, "figures", entries) is None
    made = list(cell.findall(nodes.figure))
    assert len(made) == figures and sum(len(list(f.findall(nodes.raw))) for f in made) == shown
    assert [f["ids"] for f in made] == [[f"fig-{i}"] for i in range(figures)]
    assert all(isinstance(f[-1], nodes.caption) for f in made)


@pytest.mark.parametrize("declared, shown", [(2, 1), (2, 3), (1, 0)])
def test_counts_that_do_not_fit_are_refused(declared, shown):
    entries = [{"name": f"fig-{i}", "caption": "c"} for i in range(declared)]
    document, cell = _cell({"figures": entries}, [PLOT] * shown)
    problem = numbered_outputs.number_outputs(document, cell, "figures", entries)
    assert problem and f"declares {declared} figures" in problem and f"shows {shown}" in problem
    assert not list(cell.findall(nodes.figure))


def test_a_table_output_is_not_a_figure_and_a_figure_not_a_table():
    document, cell = _cell({}, [PLOT, "<table><tr><td>1</td></tr></table>", "<p>text</p>"])
    kinds = [numbered_outputs.kind(n) for n in cell.findall(nodes.container) if n.get("nb_element") == "mime_bundle"]
    assert kinds == ["figures", "tables", None]


def test_an_entry_without_a_caption_is_rejected():
    document, cell = _cell({"figures": [{"name": "fig-x"}]}, [PLOT])
    with pytest.raises(ValueError, match="name, caption"):
        numbered_outputs.declared(cell, "figures")


def test_optional_entries_may_find_no_output_but_not_a_wrong_count():
    optional = [{"name": "fig-a", "caption": "A.", "optional": True}, {"name": "fig-b", "caption": "B.", "optional": True}]
    document, cell = _cell({"figures": optional}, [])
    assert numbered_outputs.number_outputs(document, cell, "figures", optional) is None  # a build without them
    document, cell = _cell({"figures": optional}, [PLOT] * 3)
    assert "declares 2 figures" in numbered_outputs.number_outputs(document, cell, "figures", optional)
