"""The book extension end to end: a tiny Jupyter Book is built and opened in headless Chromium.

Checks that a Plotly figure and a circuitsvis view render with the network off and their
JavaScript shipped once as static files, that claims reach `_build/claims.json` and the Claims
page, that a failing cell fails the build, and that profiles never share cached outputs.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from myst_pages import CONFIG, HEADER

pytestmark = pytest.mark.slow

JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"

TOC = """\
format: jb-book
root: page
chapters:
  - file: claims
  - file: plain
"""
PAGE = HEADER + """
# Tiny

Some inline math, $y = 2x + 3$.

```{code-cell} ipython3
import numpy as np
import plotly.graph_objects as go
from optim_hunter.report import claims, plots
from optim_hunter.core import settings

plots.show(go.Figure(go.Scatter(x=[1, 2, 3], y=[2, 1, 3])))
pattern = np.tril(np.ones((2, 3, 3)))
plots.attention_heads(pattern / pattern.sum(-1, keepdims=True), ["a", "b", "c"])
ANSWER = claims.ClaimSpec("tiny.answer", "the answer", "004", 42.0, test=claims.between(40, 44))
claims.record_all(ANSWER.measure(42.0, chapter="page", profile=settings.profile(),
                                 interval=claims.bootstrap([41.0, 42.0, 43.0], units="draws")))
print("profile=" + settings.profile())
```
"""
CLAIMS = "# Claims\n\n```{claims-table}\n:sources: sources.yml\n```\n"
SOURCES = """\
- id: s004.answer
  seed: "004"
  claim: the answer is 42
  source_value: 42
  measured_by: ["tiny.{what}"]
- id: s004.elsewhere
  seed: "004"
  claim: something we cannot test
  source_value: 7
  measured_by: []
  note: needs a big model
"""
# An executed notebook without figures: it must not load the bundles (a Markdown page would
# pass that check even if every notebook loaded them).
PLAIN = HEADER + """
# Plain

No figures here; what the book found (a front page's summary):

```{claims-summary}
:sources: sources.yml
```

```{code-cell} ipython3
print("plain sum", 2 + 3)
```
"""


def build(root: Path, profile: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPTIM_HUNTER_PROFILE": profile}
    env.pop("OPTIM_HUNTER_BOOK", None)
    return subprocess.run(
        [str(JUPYTER_BOOK), "build", str(root), "-W", "--keep-going"],
        env=env, capture_output=True, text=True, timeout=600,
    )


def make_book(root: Path, page: str = PAGE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "_config.yml").write_text(CONFIG)
    (root / "_toc.yml").write_text(TOC)
    (root / "page.md").write_text(page)
    (root / "claims.md").write_text(CLAIMS)
    (root / "sources.yml").write_text(SOURCES)
    (root / "plain.md").write_text(PLAIN)
    return root


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    root = make_book(tmp_path_factory.mktemp("tiny"))
    result = build(root, "smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed: `make browser` installs it (Debian package `chromium`, needs root)"
        if os.environ.get("CI") == "true":  # CI runs as root and installs it: there it must run
            pytest.fail(message)
        pytest.skip(message)
    return path


def rendered_dom(site: Path, page: str) -> str:
    """The DOM after scripts ran, from a local server, with every other host unreachable."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{page}"
        result = subprocess.run(
            [
                chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={site.parent / 'chromium-profile'}",
                "--virtual-time-budget=15000", "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_figures_render_offline(book):
    site = book / "_build" / "html"
    dom = rendered_dom(site, "page.html")
    assert 'class="main-svg"' in dom, "plotly did not draw its SVG"
    start = dom.index('class="optim-hunter-circuitsvis"')
    view = dom[start : dom.index("</div>", start) + 2000]
    assert "Head Selector" in view, "circuitsvis did not render its React view"
    typeset = 'class="MathJax' in dom or "mjx-chtml" in dom
    assert typeset, "MathJax (served from _static) did not typeset the formula"


def test_javascript_shipped_once_and_only_where_used(book):
    site = book / "_build" / "html"
    static = site / "_static" / "optim_hunter"
    assert (static / "plotly.min.js").stat().st_size > 1_000_000
    assert (static / "circuitsvis.js").stat().st_size > 1_000_000
    page = (site / "page.html").read_text()
    assert page.count("optim_hunter/plotly.min.js") == 1
    assert page.count("optim_hunter/circuitsvis.js") == 1
    external = re.findall(r'<script[^>]*src="(https?:[^"]*)"', page)
    assert not [src for src in external if "plot" in src or "circuits" in src], external
    assert len(page.encode()) < 200_000, "a bundle was inlined into the page"
    plain = (site / "plain.html").read_text()
    assert "plain sum 5" in plain  # executed
    assert "optim_hunter/plotly.min.js" not in plain and "optim_hunter/circuitsvis.js" not in plain


def test_claims_collected(book):
    rows = json.loads((book / "_build" / "claims.json").read_text())
    assert [row["id"] for row in rows] == ["tiny.answer"]
    assert rows[0]["verdict"] == "reproduced" and rows[0]["docname"] == "page"
    table = (book / "_build" / "html" / "claims.html").read_text()
    assert "tiny.answer" in table and "1 reproduced" in table and 'href="page.html"' in table
    assert "2 quantitative claims in the sources</b>: 1 reproduced" in table
    assert "1 not measured here" in table and "needs a big model" in table
    front = (book / "_build" / "html" / "plain.html").read_text()
    assert "2 quantitative claims in the sources</b>: 1 reproduced" in front  # counted on another page
    assert "needs a big model" not in front and "optim-hunter-claim-counts" in front  # counts, no rows


def test_profiles_never_share_cached_outputs(book):
    assert "profile=smoke" in (book / "_build" / "html" / "page.html").read_text()
    result = build(book, "full")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "profile=full" in (book / "_build" / "html" / "page.html").read_text()
    # each chapter its own cache, one per profile; the model is no part of a chapter's key that
    # does not load it
    caches = sorted(p.name.rsplit("__", 1)[0] for p in (book / "_build" / ".jupyter_cache" / "page").iterdir())
    assert caches == ["full", "smoke"]
    rows = json.loads((book / "_build" / "claims.json").read_text())
    assert rows[0]["profile"] == "full"


def test_failing_cell_fails_the_build(tmp_path):
    page = HEADER + "\n# Broken\n\n```{code-cell} ipython3\nraise RuntimeError('boom')\n```\n"
    root = make_book(tmp_path / "broken", page)
    result = build(root, "smoke")
    assert result.returncode != 0
    assert "boom" in result.stdout + result.stderr


def test_execution_times_recorded(book):
    times = json.loads((book / "_build" / "exec_times.json").read_text())
    assert times["page"]["succeeded"] is True and times["page"]["runtime"] > 0
    # exactly the executed notebooks have a row: Markdown pages (claims) execute nothing
    assert set(times) == {"page", "plain"}, times


def test_the_source_claims_are_counted_by_seed_and_status():
    from optim_hunter.book import sphinx_ext

    entries = [{"seed": "004", "claim": "a", "measured_by": ["x.a"]},
               {"seed": "004", "claim": "b", "measured_by": ["x.b"]},
               {"seed": "002", "claim": "c", "measured_by": []}]
    rows = [{"id": "x.a", "verdict": "reproduced", "docname": "p", "measured": 1.0, "unit": ""},
            {"id": "x.b", "verdict": "not_reproduced", "docname": "p", "measured": 2.0, "unit": ""}]

    class Builder:
        def get_relative_uri(self, source, target):
            return f"{target}.html"

    from sphinx.application import Sphinx

    app = Sphinx.__new__(Sphinx)  # a Sphinx (the annotation is checked under pytest), never started
    app.builder = Builder()
    page = sphinx_ext.render_sources(app, "claims", entries, rows)
    assert "3 quantitative claims in the sources</b>: 1 reproduced, 1 not reproduced" in page
    # per seed: reproduced, not reproduced, inconclusive, measured, not measured
    # sources named by their short citation, not their number
    assert ('<tr><td><span title="source 002">the y = 2x + 3 post</span></td><td>0</td><td>0</td><td>0</td><td>0</td>'
            "<td>1</td></tr>") in page
    assert ('<tr><td><span title="source 004">the regression post (2024)</span></td><td>1</td><td>1</td><td>0</td>'
            "<td>0</td><td>0</td></tr>") in page


def _row(id, verdict, **extra):
    return {"id": id, "verdict": verdict, "docname": "p", "measured": 1.0, "unit": "", **extra}


def test_a_contrast_row_or_a_check_never_decides_a_source_claim():
    from optim_hunter.book.sphinx_ext import source_status

    entry = {"seed": "004", "claim": "a", "measured_by": ["x.{what}"]}
    contrast = _row("x.toy", "not_reproduced", decides_source=False)
    check = _row("x.identity", "check", holds=True, decides_source=False)
    pretrained = _row("x.llm", "reproduced")
    assert source_status(entry, [contrast, pretrained])[0] == "reproduced"
    assert source_status(entry, [contrast, check])[0] == "measured"  # shown, but nothing decides it
    assert len(source_status(entry, [contrast, check])[1]) == 2
    assert source_status(entry, [pretrained, _row("x.llm2", "inconclusive")])[0] == "inconclusive"
    assert source_status(entry, [_row("x.llm2", "inconclusive"), _row("x.llm3", "not_reproduced")])[0] == "not_reproduced"


def test_the_api_page_documents_every_module():
    import pkgutil

    import optim_hunter
    from optim_hunter.book import api_page

    page = (Path(__file__).resolve().parents[2] / "book" / "api.md").read_text()
    assert "```{api-reference}" in page  # generated from the package, not a hand list
    documented = {m for modules in api_page.modules_by_layer().values() for m in modules}
    rst = "\n".join(api_page.reference_rst())
    modules = {m.name for m in pkgutil.walk_packages(optim_hunter.__path__, "optim_hunter.")}
    layers = {f"optim_hunter.{layer}" for layer in api_page.LAYERS}
    assert documented == modules - api_page.ELSEWHERE - layers
    assert all(f"automodule:: {m}\n   :members:" in rst for m in documented)
    assert all(f"automodule:: {layer}\n" in rst for layer in layers)  # each layer's docstring


@pytest.mark.slow
def test_the_api_page_renders_each_module_of_a_layer(tmp_path):
    """The directive's autodoc runs in a MyST page: signatures and docstrings, not the directives' text."""
    from optim_hunter.book import api_page

    root = tmp_path / "api"
    root.mkdir()
    (root / "_config.yml").write_text(CONFIG)
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: api\n")
    (root / "intro.md").write_text("# intro\n")
    (root / "api.md").write_text("# API\n\n```{api-reference} core data\n```\n")
    result = build(root, "smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (root / "_build" / "html" / "api.html").read_text()
    assert "automodule::" not in page  # parsed, not shown as text
    for module in api_page.modules_by_layer()["core"] + api_page.modules_by_layer()["data"]:
        assert f'id="module-{module}"' in page, module
    assert 'id="optim_hunter.core.losses.next_token_losses"' in page


def test_a_damaged_execution_cache_entry_is_re_executed_not_served(tmp_path):
    """A build killed while the cache was written, or a disk error: a truncated executed notebook in
    the execution cache must not reach the site (nor fail the build): the page is executed again."""
    root = make_book(tmp_path / "book")
    assert build(root, "smoke").returncode == 0
    stored = [p for p in (root / "_build" / ".jupyter_cache").rglob("*.ipynb")]
    assert stored, "no executed notebook in the cache"
    for notebook in stored:
        notebook.write_text(notebook.read_text()[: len(notebook.read_text()) // 2])  # truncated
    shutil.rmtree(root / "_build" / "html")
    result = build(root, "smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "plain sum 5" in (root / "_build" / "html" / "plain.html").read_text()


def test_each_executed_chapter_offers_its_notebook_with_figures_that_need_no_site(book):
    import nbformat

    site = book / "_build" / "html"
    target = site / "_sources" / "page.ipynb"
    assert target.is_file(), "no downloadable notebook for the executed page"
    notebook = nbformat.read(target, as_version=4)
    nbformat.validate(notebook)
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", []) if "data" in o]
    figures = [o["data"] for o in outputs if "application/vnd.plotly.v1+json" in o["data"]]
    assert len(figures) == 2  # the scatter, and the attention view as heat maps
    scatter = figures[0]["application/vnd.plotly.v1+json"]
    assert scatter["data"][0]["type"] == "scatter" and scatter["data"][0]["y"] == [2, 1, 3]
    assert [t["type"] for t in figures[1]["application/vnd.plotly.v1+json"]["data"]] == ["heatmap"] * 2
    # the site-only snippets (they call the site's bundles) are not in the download
    assert not any("text/html" in data for data in figures)
    assert "Plotly.newPlot" not in target.read_text() and "CircuitsVis.render" not in target.read_text()
    assert "profile=" in target.read_text()  # executed outputs (the profile of the fixture's last build)
    # the theme's download menu offers it; the page renders the snippet, not the figure JSON
    page = (site / "page.html").read_text()
    assert "_sources/page.ipynb" in page and "download-notebook-button" in page
    assert "Plotly.newPlot" in page and "CircuitsVis.render" in page
    assert "vnd.plotly.v1+json" not in page and "query %{y}" not in page  # the heat-map stand-in stays out
    assert "optim_hunter_outside_site" not in page
    # the plain notebook is offered too; a Markdown page has no notebook
    assert (site / "_sources" / "plain.ipynb").is_file()
    assert not (site / "_sources" / "claims.ipynb").exists()
    assert "_sources/claims.ipynb" not in (site / "claims.html").read_text()


# --- a render killed anywhere resumes -------------------------------------------------------------

# Test-only extension: the build stops at a named point (PAUSE_AT) after writing PAUSE_MARKER, so
# the test can SIGKILL it exactly there.
PAUSE_EXTENSION = '''\
import os, time
from pathlib import Path


def _pause(point):
    if os.environ.get("PAUSE_AT") == point:
        Path(os.environ["PAUSE_MARKER"]).write_text(point)
        time.sleep(600)


def setup(app):
    app.connect("doctree-read", lambda app, doctree: _pause("read:" + app.env.docname))
    app.connect("html-page-context", lambda app, pagename, *rest: _pause("write:" + pagename))
    app.connect("build-finished", lambda app, exception: _pause("finish"), priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
'''


def _site(root: Path) -> dict[str, str]:
    """What a render produces that a reader sees or a tool reads: every page, the search index, the
    downloadable notebooks and the claims. A notebook's cell ids are left out: myst-nb draws them at
    random each time it reads a chapter, so two uninterrupted renders from scratch differ there."""
    build = root / "_build"
    files = {p.relative_to(build).as_posix(): p.read_text(encoding="utf-8")
             for p in sorted((build / "html").rglob("*")) if p.suffix in (".html", ".js", ".ipynb")
             and "_static" not in p.parts}
    for name in [n for n in files if n.endswith(".ipynb")]:
        notebook = json.loads(files[name])
        for cell in notebook["cells"]:
            cell.pop("id", None)
        files[name] = json.dumps(notebook, indent=1, sort_keys=True)
    files["claims.json"] = (build / "claims.json").read_text(encoding="utf-8")
    return files


def _only_the_cache(root: Path) -> None:
    """Remove every render output, keeping the execution cache (as `optim-hunter execute` leaves
    `_build` for the render)."""
    for path in (root / "_build").iterdir():
        if path.name != ".jupyter_cache":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture(scope="module")
def executed_book(tmp_path_factory):
    """A tiny book whose chapters are executed into the cache (each execution appends a line to
    `executions`), and the site and claims of an uninterrupted render from that cache."""
    base = tmp_path_factory.mktemp("resume")
    root = make_book(base / "book", page=PAGE + f"""
```{{code-cell}} ipython3
with open({str(base / 'executions')!r}, "a") as log:
    log.write("page executed\\n")
```
""")
    (root / "pause_here.py").write_text(PAUSE_EXTENSION)
    with open(root / "_config.yml", "a") as config:
        config.write("  local_extensions:\n    pause_here: .\n")
    result = build(root, "smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (base / "executions").read_text() == "page executed\n"
    _only_the_cache(root)
    result = build(root, "smoke")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, _site(root)


@pytest.mark.parametrize("point", ["read:page", "write:plain", "finish"])
def test_a_render_killed_anywhere_resumes_to_the_same_site(executed_book, point):
    """SIGKILL of `jupyter-book build` while it reads the pages, while it writes them (with the
    page written last cut short, as a kill inside its write leaves it), or before it collects the
    claims: the next build executes nothing (the cache serves every chapter), passes under -W, and
    its pages, search index and `claims.json` are those of the uninterrupted render; `claims.json`
    is never seen half-written."""
    import signal
    import time

    root, expected = executed_book
    _only_the_cache(root)
    claims_json = root / "_build" / "claims.json"
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # every state of claims.json during both builds
        while not stop.is_set():
            try:
                seen.append(claims_json.read_text(encoding="utf-8"))
            except FileNotFoundError:
                pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    marker = root.parent / f"paused-{point.replace(':', '-')}"
    env = {**os.environ, "OPTIM_HUNTER_PROFILE": "smoke", "PAUSE_AT": point, "PAUSE_MARKER": str(marker)}
    env.pop("OPTIM_HUNTER_BOOK", None)
    killed = subprocess.Popen([str(JUPYTER_BOOK), "build", str(root), "-W", "--keep-going"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not marker.exists() and killed.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the build never reached {point} (exit status {killed.poll()})"
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    html = root / "_build" / "html"
    if point == "write:plain":  # pages are written in name order: claims, page, then plain
        written = html / "page.html"
        assert written.is_file() and not (html / "plain.html").exists()
        # a kill inside the write of a page leaves it cut short, newer than its source
        written.write_text(written.read_text()[:200])
    result = build(root, "smoke")
    stop.set()
    watcher.join()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (root.parent / "executions").read_text() == "page executed\n", "a chapter was executed again"
    times = json.loads((root / "_build" / "exec_times.json").read_text())
    assert {page: row["method"] for page, row in times.items()} == {"page": "cache", "plain": "cache"}
    site = _site(root)
    assert sorted(site) == sorted(expected)
    assert [name for name in expected if site[name] != expected[name]] == []
    assert all(state == expected["claims.json"] for state in seen), "claims.json was seen incomplete"
