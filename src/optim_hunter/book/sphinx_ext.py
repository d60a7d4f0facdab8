"""Jupyter Book (Sphinx) extension: offline figures, per-profile caches and the claims registry.

Enabled in `_config.yml` under `sphinx.extra_extensions`. It
  * marks kernels as running inside a book build (`OPTIM_HUNTER_BOOK=1`) so `optim_hunter.report.plots`
    emits snippets that use globally loaded plotly.js / circuitsvis;
  * copies plotly.min.js and the circuitsvis bundle once into `_static/optim_hunter/` and adds them
    only to the pages that show such figures (no CDN, nothing inlined per figure);
  * serves MathJax (2.7, from the `jupyter-server-mathjax` package) from the site itself, so
    formulas render offline too;
  * gives every chapter its own jupyter-cache, keyed by the profile, the package code the chapter
    imports and, for the chapters that read them, the language model's settings
    (`optim_hunter.book.chapter_cache`), and re-reads a page when its key changes: a smoke build never
    serves cached full results, outputs are never served for code that changed, and editing one
    module re-executes only the chapters that import it;
  * collects the claim rows chapters displayed into `_build/claims.json` and renders the
    `{claims-table}` directive (the Claims page) from them;
  * numbers the figures and tables code cells declare (`optim_hunter.book.numbered_outputs`);
  * links the book's stylesheet (`static/optim_hunter.css`: code cells wrap long lines, wide tables
    scroll inside the content column) on every page, copied beside the other assets.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from optim_hunter import zoo
from optim_hunter.book import api_page, bench_page, chapter_cache, numbered_outputs
from optim_hunter.core import diskspace, settings
from optim_hunter.report import claims
from optim_hunter.report.plots import BOOK_ENV, CIRCUITSVIS_MARK, PLOTLY_MARK, site_independent_notebook

STATIC_SUBDIR = "optim_hunter"
STYLESHEET = Path(__file__).parent / "static" / "optim_hunter.css"
MATHJAX_PATH = f"{STATIC_SUBDIR}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
ASSETS = {
    "plotly": ("plotly.min.js", PLOTLY_MARK),
    "circuitsvis": ("circuitsvis.js", CIRCUITSVIS_MARK),
}


def _asset_sources() -> dict[str, Path]:
    import circuitsvis
    import plotly

    return {
        "plotly": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
        "circuitsvis": Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js",
    }


def package_fingerprint() -> str:
    """A hash of the whole package's source (the pages that execute nothing follow it)."""
    modules = chapter_cache.package_modules()
    return chapter_cache.code_hash(modules, modules)


def build_context() -> dict[str, str]:
    """What the pages that execute nothing show besides their text (settings tables, claims): profile,
    model, contrasts, the language model's device and dtype, and the package's code. A chapter's
    executed outputs have their own key (`chapter_cache.chapter_context`)."""
    return {"profile": settings.profile(), "model": zoo.model_name(),
            "contrasts": ",".join(zoo.contrasts()), **settings.run_context(), "code": package_fingerprint()}


def executes(path: Path) -> bool:
    """Whether the page at `path` has code cells (a chapter myst-nb executes)."""
    return path.suffix == ".md" and path.is_file() and "```{code-cell}" in path.read_text()


def _config_inited(app: Sphinx, config: Any) -> None:
    os.environ[BOOK_ENV] = "1"  # inherited by the kernels myst-nb starts
    # Each chapter's own cache is set page by page (`_source_read`); this is the folder above them.
    config.nb_execution_cache_path = str(Path(app.outdir).parent / chapter_cache.CACHE_DIR)
    # MathJax from _static instead of a CDN (MathJax 2 takes its config from MathJax.Hub.Config).
    config.mathjax_path = MATHJAX_PATH
    config.mathjax3_config = None
    config.mathjax2_config = {
        "tex2jax": {"processClass": "math|output_area", "processEscapes": True},
        "messageStyle": "none",
    }


def _context(env: Any, docname: str, site: dict[str, str]) -> dict[str, str]:
    path = Path(env.doc2path(docname))
    return chapter_cache.chapter_context(docname, path) if executes(path) else site


def _env_get_outdated(app: Sphinx, env: Any, added: set, changed: set, removed: set) -> list[str]:
    return outdated_pages(env)


def outdated_pages(env: Any) -> list[str]:
    """The pages whose key changed since the last build (recorded in `env`): a chapter when its own
    key did, a page that executes nothing when the build's settings or code did."""
    site = build_context()
    before = getattr(env, "optim_hunter_contexts", {})
    now = {doc: _context(env, doc, site) for doc in sorted(env.found_docs)}
    env.optim_hunter_contexts = now
    return [doc for doc, context in now.items() if before.get(doc) != context]


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Point myst-nb at this chapter's own execution cache before it parses the page."""
    path = Path(app.env.doc2path(docname))
    if executes(path):
        folder = chapter_cache.cache_path(Path(app.outdir).parent, docname,
                                          chapter_cache.chapter_context(docname, path))
        app.env.mystnb_config = app.env.mystnb_config.copy(execution_cache_path=str(folder))


def _purge(app: Sphinx, env: Any, docname: str) -> None:
    for attr in ("optim_hunter_claims", "optim_hunter_assets"):
        getattr(env, attr, {}).pop(docname, None)


def _merge(app: Sphinx, env: Any, docnames: set, other: Any) -> None:
    for attr in ("optim_hunter_claims", "optim_hunter_assets"):
        mine = env.__dict__.setdefault(attr, {})
        for docname in docnames:
            if docname in getattr(other, attr, {}):
                mine[docname] = getattr(other, attr)[docname]


def _doctree_read(app: Sphinx, doctree: nodes.document) -> None:
    env = app.env
    docname = env.docname
    rows: list[dict[str, Any]] = []
    assets: set[str] = set()
    for raw in doctree.findall(nodes.raw):
        text = raw.astext()
        rows.extend(claims.extract(text))
        for name, (_, mark) in ASSETS.items():
            if mark in text:
                assets.add(name)
    for row in rows:
        row["docname"] = docname
    env.__dict__.setdefault("optim_hunter_claims", {})[docname] = rows
    env.__dict__.setdefault("optim_hunter_assets", {})[docname] = assets
    pages = env.__dict__.setdefault("optim_hunter_claims_pages", set())
    if any(True for kind in (claims_table, bench_table, claims_summary) for _ in doctree.findall(kind)):
        pages.add(docname)
    else:
        pages.discard(docname)


def _env_get_updated(app: Sphinx, env: Any) -> list[str]:
    # The Claims page depends on every chapter: rewrite it whenever the build runs.
    return sorted(getattr(env, "optim_hunter_claims_pages", set()))


def _page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    used = getattr(app.env, "optim_hunter_assets", {}).get(pagename, set())
    for name in sorted(used):
        # Added during html-page-context, so only this page links it.
        app.add_js_file(f"{STATIC_SUBDIR}/{ASSETS[name][0]}")


def all_claims(env: Any) -> list[dict[str, Any]]:
    rows = [row for doc_rows in getattr(env, "optim_hunter_claims", {}).values() for row in doc_rows]
    return sorted(rows, key=lambda row: (row["docname"], row["id"]))


def _build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static" / STATIC_SUBDIR
    static.mkdir(parents=True, exist_ok=True)
    for name, source in _asset_sources().items():
        text = source.read_text(encoding="utf-8")
        # The bundles reference source maps that are not shipped; drop the reference.
        text = "\n".join(line for line in text.splitlines() if not line.startswith("//# sourceMappingURL"))
        (static / ASSETS[name][0]).write_text(text, encoding="utf-8")
    shutil.copyfile(STYLESHEET, static / STYLESHEET.name)
    import jupyter_server_mathjax

    mathjax = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(mathjax, static / "mathjax", dirs_exist_ok=True)
    rows = all_claims(app.env)
    ids = [row["id"] for row in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RuntimeError(f"claim ids recorded more than once: {', '.join(duplicates)}")
    _write_json(Path(app.outdir).parent / "claims.json", rows)
    _write_json(Path(app.outdir).parent / "exec_times.json", execution_times(app.env))


def _write_json(target: Path, data: Any) -> None:
    """Write `target` through a temporary moved into place; a full disk leaves the previous file
    whole and raises `diskspace.DiskFullError` naming the folder and the space needed."""
    tmp = target.with_suffix(".json.tmp")
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    with diskspace.writing(target, len(text.encode()), [tmp], hint="free space there and build again"):
        try:
            tmp.write_text(text, encoding="utf-8")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    tmp.replace(target)


def execution_times(env: Any) -> dict[str, dict[str, Any]]:
    """Per executed page, what myst-nb recorded: seconds the notebook ran, how it was executed
    ("cache": a stored run, timed when it ran) and whether it succeeded (for `make bench`)."""
    out = {}
    for docname, data in sorted(getattr(env, "nb_metadata", {}).items()):
        exec_data = data.get("exec_data")
        if exec_data:
            out[docname] = {key: exec_data.get(key) for key in ("runtime", "method", "succeeded")}
    return out


class claims_table(nodes.General, nodes.Element):
    """Placeholder replaced by the full table once every page has been read."""


def render_settings() -> str:
    """The build's settings as an HTML table, from `settings.variables()` (defaults included)."""
    rows = "".join(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(values)}</td>"
                   f"<td>{html.escape(effect)}</td></tr>" for name, values, effect in settings.variables())
    return ('<div class="optim-hunter-scroll" style="overflow-x:auto"><table class="table optim-hunter-settings">'
            "<thead><tr><th>variable</th><th>values</th><th>effect</th></tr></thead><tbody>" + rows
            + "</tbody></table></div>")


class SettingsTableDirective(SphinxDirective):
    """`{settings-table}`: the environment variables that steer a build, from the package."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        return [nodes.raw("", render_settings(), format="html")]


class claims_summary(nodes.General, nodes.Element):
    """Placeholder for the sources' claims counted by status (the front page), filled once every
    page has been read."""


class ClaimsTableDirective(SphinxDirective):
    """`{claims-table}` with an optional `:sources:` YAML manifest of the source studies' claims
    (path relative to the page), each mapped to the book claim ids that measure it."""

    has_content = False
    option_spec = {"sources": str}

    def run(self) -> list[nodes.Node]:
        node = claims_table("")
        if "sources" in self.options:
            rel, path = self.env.relfn2path(self.options["sources"], self.env.docname)
            self.env.note_dependency(rel)
            node["sources"] = load_sources(Path(path))
        return [node]


class ClaimsSummaryDirective(ClaimsTableDirective):
    """`{claims-summary}` with a `:sources:` manifest: the counts of the Claims page, no table of rows."""

    option_spec = {"sources": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        node = claims_summary("")
        rel, path = self.env.relfn2path(self.options["sources"], self.env.docname)
        self.env.note_dependency(rel)
        node["sources"] = load_sources(Path(path))
        return [node]


def load_sources(path: Path) -> list[dict[str, Any]]:
    """The source-claims manifest: a YAML list of {id, seed, claim, source_value, quote, measured_by, note}."""
    import yaml

    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for entry in entries:
        missing = {"id", "seed", "claim", "measured_by"} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {entry.get('id', '?')} lacks {sorted(missing)}")
    return entries


def _matches(pattern: str, claim_id: str) -> bool:
    import re

    regex = "^" + re.sub(r"\\\{[^}]*\\\}", "[a-z0-9_]+", re.escape(pattern)) + "$"
    return re.match(regex, claim_id) is not None


def deciding(row: dict[str, Any]) -> bool:
    """Whether a row may decide a source claim: not a check, not a contrast model's row."""
    return row.get("decides_source", True) and row["verdict"] != "check"


def source_status(entry: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A source claim's status from the book rows that measure it. Only rows that decide (not
    checks, not contrast models) count: not_reproduced if any of them is, else inconclusive if any
    is, else reproduced if any is; measured when they carry no verdict (or only checks and contrasts
    measure it); not_measured when no row does. All measuring rows are returned, for display."""
    measured = [row for row in rows if any(_matches(p, row["id"]) for p in entry["measured_by"] or [])]
    if not measured:
        return "not_measured", []
    verdicts = {row["verdict"] for row in measured if deciding(row)}
    for status in ("not_reproduced", "inconclusive", "reproduced"):
        if status in verdicts:
            return status, measured
    return "measured", measured


def _counts_by_seed(entries: list[dict[str, Any]], statuses: list[tuple[str, Any]], kinds: tuple[str, ...]) -> str:
    """A table: one row per source study, the number of its claims with each status."""
    seeds = sorted({str(entry["seed"]) for entry in entries})
    body = "".join(
        f"<tr><td>{_source(seed)}</td>" + "".join(
            f"<td>{sum(1 for e, (s, _) in zip(entries, statuses) if str(e['seed']) == seed and s == k)}</td>"
            for k in kinds) + "</tr>"
        for seed in seeds
    )
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in kinds)
    return ('<table class="table optim-hunter-claim-counts"><thead><tr><th>source</th>' + head
            + "</tr></thead><tbody>" + body + "</tbody></table>")


SOURCE_KINDS = ("reproduced", "not_reproduced", "inconclusive", "measured", "not_measured")


def render_summary(entries: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """What the book found, in one paragraph and one table: the sources' claims by status."""
    statuses = [source_status(entry, rows) for entry in entries]
    counts = {k: sum(1 for s, _ in statuses if s == k) for k in SOURCE_KINDS}
    return (
        f"<p><b>{len(entries)} quantitative claims in the sources</b>: {counts['reproduced']} "
        f"reproduced, {counts['not_reproduced']} not reproduced, {counts['inconclusive']} inconclusive, "
        f"{counts['measured']} measured without a verdict, {counts['not_measured']} not measured here. "
        "Only rows that measure the claim on the kind of model the source meant decide it; checks of our own "
        "construction and contrast models are shown but never decide.</p>"
    ) + _counts_by_seed(entries, statuses, SOURCE_KINDS)


def render_sources(app: Sphinx, fromdocname: str, entries: list[dict[str, Any]],
                   rows: list[dict[str, Any]]) -> str:
    statuses = [source_status(entry, rows) for entry in entries]
    head = render_summary(entries, rows)
    cells = []
    for entry, (status, measured) in zip(entries, statuses):
        ours = "<br>".join(
            f'<a href="{app.builder.get_relative_uri(fromdocname, row["docname"])}">'
            f"<code>{html.escape(row['id'])}</code></a>: {html.escape(_value(row['measured']))} "
            f"{html.escape(row['unit'])}{html.escape(_interval(row))} ({html.escape(claims.verdict_words(row))}"
            f"{'' if deciding(row) or row['verdict'] == 'check' else ', contrast: does not decide'})"
            for row in measured
        ) or html.escape(entry.get("note") or "")
        cells.append(
            "<tr>"
            f"<td>{_source(str(entry['seed']))}</td>"
            f"<td>{html.escape(entry['claim'])}</td>"
            f"<td>{html.escape(_value(entry.get('source_value')))}"
            + (f"<br><q>{html.escape(entry['quote'])}</q>" if entry.get("quote") else "") + "</td>"
            f"<td>{ours}</td>"
            f"<td class=\"verdict-{status}\">{status.replace('_', ' ')}</td>"
            "</tr>"
        )
    return (
        head
        + '<div class="optim-hunter-scroll" style="overflow-x:auto">'
        '<table class="table optim-hunter-source-claims"><thead><tr>'
        "<th>source</th><th>claim</th><th>source value</th><th>ours</th><th>status</th>"
        "</tr></thead><tbody>" + "".join(cells) + "</tbody></table></div>"
    )


def _source(seed: str) -> str:
    """A source as its short citation (the id kept as a tooltip)."""
    name = claims.SOURCE_NAMES.get(seed, seed)
    return f'<span title="source {html.escape(seed)}">{html.escape(name)}</span>'


def _interval(row: dict[str, Any]) -> str:
    interval = row.get("interval")
    return "" if interval is None else f" [{_value(float(interval[0]))}, {_value(float(interval[1]))}]"


def _rows_by_source(rows: list[dict[str, Any]]) -> str:
    """Counts of the book's rows by source and verdict (checks and contrasts apart)."""
    kinds = claims.VERDICTS
    sources = sorted({row["source_seed"] for row in rows})
    body = "".join(
        f"<tr><td>{_source(source)}</td>" + "".join(
            f"<td>{sum(1 for r in rows if r['source_seed'] == source and r['verdict'] == k)}</td>" for k in kinds)
        + f"<td>{sum(1 for r in rows if r['source_seed'] == source and not deciding(r) and r['verdict'] != 'check')}</td>"
        + "</tr>"
        for source in sources
    )
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in kinds) + "<th>of them contrast rows</th>"
    return ('<div class="optim-hunter-scroll" style="overflow-x:auto"><table class="table optim-hunter-claim-counts">'
            "<thead><tr><th>source</th>" + head + "</tr></thead><tbody>" + body + "</tbody></table></div>")


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(app: Sphinx, fromdocname: str, rows: list[dict[str, Any]]) -> str:
    counts = claims.summary(rows)
    head = (
        f"<p><b>{len(rows)} rows</b>: {counts['reproduced']} reproduced, "
        f"{counts['not_reproduced']} not reproduced, {counts['inconclusive']} inconclusive (the interval "
        f"straddles the criterion), {counts['check']} checks of our own construction, "
        f"{counts['measured']} only measured.</p>"
    ) + _rows_by_source(rows)
    cells = []
    for row in rows:
        link = app.builder.get_relative_uri(fromdocname, row["docname"])
        title = app.env.titles.get(row["docname"])
        chapter = html.escape(title.astext() if title is not None else row["chapter"])
        cells.append(
            "<tr>"
            f"<td><code>{html.escape(row['id'])}</code></td>"
            f"<td>{html.escape(row['claim'])}</td>"
            f"<td>{_source(row['source_seed'])}</td>"
            f"<td>{html.escape(_value(row['source_value']))}"
            + (f"<br><q>{html.escape(row['source_quote'])}</q>" if row.get("source_quote") else "") + "</td>"
            f"<td>{html.escape(_value(row['measured']))} {html.escape(row['unit'])}</td>"
            f"<td>{html.escape(_interval(row).strip()) or '—'}"
            + (f"<br><small>{html.escape(row['interval_kind'])}</small>" if row.get("interval_kind") else "")
            + (f"<br><small>no interval: {html.escape(row['why_no_interval'])}</small>"
               if row.get("why_no_interval") and row["verdict"] in claims.DECIDED else "")
            + f"</td><td>{'' if row.get('n') is None else row['n']}</td>"
            f"<td class=\"verdict-{row['verdict']}\">{html.escape(claims.verdict_words(row))}"
            + ("" if deciding(row) or row["verdict"] == "check" else "<br><small>contrast: decides no source claim</small>")
            + "</td>"
            f"<td>{html.escape(row.get('criterion', ''))}"
            + (f"<br><small>first declared as: {html.escape(row['first_criterion'])}</small>"
               if row.get("first_criterion") else "") + "</td>"
            f"<td><a href=\"{link}\">{chapter}</a></td>"
            f"<td>{html.escape(row['profile'])} / {html.escape(row['model'] or '—')}</td>"
            "</tr>"
        )
    return (
        head
        + '<div class="optim-hunter-scroll" style="overflow-x:auto"><table class="table optim-hunter-claims"><thead><tr>'
        "<th>id</th><th>claim</th><th>source</th><th>source value</th><th>ours</th><th>interval</th><th>n</th>"
        "<th>verdict</th><th>criterion</th><th>chapter</th><th>profile / model</th>"
        "</tr></thead><tbody>"
        + "".join(cells)
        + "</tbody></table></div>"
    )


class bench_table(nodes.General, nodes.Element):
    """Placeholder for the latest `make bench` results (`_build/bench.json`)."""


class BenchTableDirective(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        return [bench_table("")]


def _doctree_resolved(app: Sphinx, doctree: nodes.document, fromdocname: str) -> None:
    for node in list(doctree.findall(bench_table)):
        page = bench_page.render(Path(app.outdir).parent / "bench.json") + bench_page.precisions(settings.profile())
        node.replace_self(nodes.raw("", page, format="html"))
    for node in list(doctree.findall(claims_summary)):
        node.replace_self(nodes.raw("", render_summary(node["sources"], all_claims(app.env)), format="html"))
    for node in list(doctree.findall(claims_table)):
        rows = all_claims(app.env)
        table = render_table(app, fromdocname, rows)
        if node.get("sources") is not None:
            table = render_sources(app, fromdocname, node["sources"], rows) + table
        node.replace_self(nodes.raw("", table, format="html"))


NOTEBOOK_DIR = "jupyter_execute"  # where myst-nb writes each executed notebook (beside the html folder)


def downloadable_notebook(executed: Path, target: Path) -> None:
    """Write the executed notebook for use outside the site: site-only snippets dropped (each figure
    keeps its self-contained plotly JSON), validated by nbformat."""
    import nbformat

    notebook = site_independent_notebook(nbformat.read(executed, as_version=4))
    nbformat.validate(notebook)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    nbformat.write(notebook, tmp)
    tmp.replace(target)


def _offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Every executed chapter offers its executed `.ipynb`: written to `_sources/<page>.ipynb` and
    named in `ipynb_source`, which the book theme's download menu turns into an `.ipynb` entry
    (its handler runs after this one, at priority 501)."""
    if app.builder.format != "html" or doctree is None:
        return
    executed = Path(app.outdir).parent / NOTEBOOK_DIR / f"{pagename}.ipynb"
    if not executed.is_file() or pagename not in getattr(app.env, "nb_metadata", {}):
        return
    downloadable_notebook(executed, Path(app.outdir) / "_sources" / f"{pagename}.ipynb")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict[str, Any]:
    api_page.setup(app)
    app.add_node(claims_table)
    app.add_node(bench_table)
    app.add_node(claims_summary)
    app.add_directive("bench-table", BenchTableDirective)
    app.add_directive("claims-table", ClaimsTableDirective)
    app.add_directive("claims-summary", ClaimsSummaryDirective)
    app.add_directive("settings-table", SettingsTableDirective)
    app.connect("config-inited", _config_inited)
    app.connect("env-get-outdated", _env_get_outdated)
    app.connect("source-read", _source_read)
    app.connect("env-get-updated", _env_get_updated)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("doctree-read", _doctree_read)
    app.connect("doctree-resolved", _doctree_resolved)
    app.connect("html-page-context", _page_context)
    app.connect("build-finished", _build_finished)
    app.connect("html-page-context", _offer_notebook, priority=490)
    numbered_outputs.setup(app)
    app.add_css_file(f"{STATIC_SUBDIR}/{STYLESHEET.name}")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
