"""The claims registry: each measurement checked against a source study's value.

A claim is *declared* in the package, beside the code that measures it, with `declare(...)`: its
id, the source's value and the criterion that decides the verdict, all fixed before any number is
known. An analysis turns its declared claims into rows with `ClaimSpec.measure(value, ...)` (the
criterion's test is applied to the value, never chosen after seeing it), and a chapter records all
rows of a section with one call, `record_all(result)`.

A verdict is decided on an interval, not a point (`optim_hunter.report.verdicts`): the criterion is a
region of values (`at_least`, `between`, ...) and the row carries a 95% bootstrap interval over
the units its number averages, or the range over training seeds; the verdict is *reproduced* when
the whole interval meets the criterion, *not reproduced* when none of it does, *inconclusive* when
it straddles. A row without an interval says why (`why_no_interval`). Three roles: a `claim`
measures a source's statement; a `check` is a property of our own construction (an identity, a
sanity property), shown and counted apart, never a reproduction; a `contrast` measures a model the
source did not mean (a task-trained toy beside a pretrained model) and never decides a source
claim (`decides_source`). A source value carries the source's sentence that states it
(`source_quote`, verbatim from the seeds); a criterion changed after a run keeps its first form
(`first_criterion`) with the reason.

`record_all` displays the rows in the executing notebook as HTML that carries each row as JSON. The
book's Sphinx extension (`optim_hunter.book.sphinx_ext`) collects those rows from every executed
chapter into `_build/claims.json` and the Claims page, so the registry always matches the outputs
the site shows (cached or fresh) and never a stale side file. `declared()` lists every declared
claim (the source-claims manifest is checked against it).
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import json
import math
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, SupportsFloat

import optim_hunter
from optim_hunter.analysis.intervals import (  # noqa: F401  (re-exported: a result reads claims.bootstrap(...))
    Interval,
    bootstrap,
    bootstrap_units,
    seed_range,
)
from optim_hunter.core import settings
from optim_hunter.report.verdicts import (  # noqa: F401  (re-exported: a declaration reads claims.at_least(...))
    Covers,
    Region,
    above,
    at_least,
    at_most,
    below,
    between,
    covers,
)

Verdict = Literal["reproduced", "not_reproduced", "inconclusive", "check", "measured"]
VERDICTS: tuple[Verdict, ...] = ("reproduced", "not_reproduced", "inconclusive", "check", "measured")
Role = Literal["claim", "check", "contrast"]
ROLES: tuple[Role, ...] = ("claim", "check", "contrast")
SEEDS = ("001", "002", "003", "004", "llm4regression", "von-oswald-2023", "olsson-2022", "issue")
# How pages name each source: a short citation (book/references.bib holds the entries).
SOURCE_NAMES = {
    "001": "Bhargav & Gu (2024)",
    "002": "the y = 2x + 3 post",
    "003": "Olsson et al. (2022)",
    "004": "the regression post (2024)",
    "llm4regression": "Vacareanu et al. (2024)",
    "von-oswald-2023": "von Oswald et al. (2023)",
    "olsson-2022": "Olsson et al. (2022)",
    "issue": "our own bar",
}

_ID = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
# a declared id may hold str.format fields, each standing for one id word: "lsa.depth{k}.gd_loss"
_TEMPLATE = re.compile(r"^[a-z0-9_{}]+(\.[a-z0-9_{}]+)+$")
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*)(?::[^{}]*)?\}")  # a field, with its format spec if any
_MARK = "optim-hunter-claim"
_SCRIPT = re.compile(
    r'<script type="application/json" class="' + _MARK + r'">(.*?)</script>', re.DOTALL
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of the registry. `source_value` is None when the source gives no number."""

    id: str
    chapter: str
    claim: str
    source_seed: str
    source_value: float | str | None
    measured: float | str | None
    unit: str
    verdict: Verdict
    profile: str
    model: str
    criterion: str = ""
    interval: list[float] | None = None
    interval_kind: str = ""
    n: int | None = None
    why_no_interval: str = ""
    source_quote: str = ""
    decides_source: bool = True
    first_criterion: str = ""
    holds: bool | None = None  # a check's outcome (verdict "check"); None for every other row
    runs_on: str = ""  # the language model's device and dtype ("cpu, float32") on its own rows

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_value(name: str, value: Any) -> float | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, a string or None, not a bool")
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number, a string or None, got {value!r}") from err
    if math.isnan(number):
        # NaN would become invalid JSON; a chapter must say why a value is missing instead.
        raise ValueError(f"{name} is NaN: record a string explaining the missing value instead")
    return number


def _checked_verdict(id: str, source_seed: str, profile: str, reproduced: bool | None, verdict: Verdict | None,
                     criterion: str) -> Verdict:
    """The row's verdict, after the checks a row must pass (id, source, profile, criterion)."""
    if not _ID.match(id):
        raise ValueError(f"claim id {id!r} must be dotted lowercase words, e.g. 'regressor.f2.best_mae'")
    if source_seed not in SEEDS:
        raise ValueError(f"unknown source {source_seed!r}: choose one of {', '.join(SEEDS)}")
    settings.profile(profile)  # a typo would file the row under a profile no page shows
    if verdict is not None and reproduced is not None:
        raise TypeError(f"claim {id}: give reproduced or verdict, not both")
    if verdict is None:
        verdict = "measured" if reproduced is None else ("reproduced" if reproduced else "not_reproduced")
    if verdict not in VERDICTS:
        raise ValueError(f"claim {id}: unknown verdict {verdict!r}: choose one of {', '.join(VERDICTS)}")
    if verdict != "measured" and not criterion:
        raise ValueError(f"claim {id}: a verdict needs the criterion that decided it")
    return verdict


def make_claim(
    id: str,
    *,
    chapter: str,
    claim: str,
    source_seed: str,
    source_value: SupportsFloat | str | None,
    measured: SupportsFloat | str | None,
    unit: str = "",
    reproduced: bool | None = None,
    criterion: str = "",
    profile: str,
    model: str = "",
    verdict: Verdict | None = None,
    interval: Interval | None = None,
    why_no_interval: str = "",
    source_quote: str = "",
    decides_source: bool = True,
    first_criterion: str = "",
    holds: bool | None = None,
) -> Claim:
    """Validate and build a Claim.

    `reproduced` is the chapter's own test of the source's statement (True/False), with the test
    written out in `criterion`; None means the row is only measured (no comparable source value).
    `verdict` gives the verdict directly instead ("inconclusive", "check", ...).
    """
    verdict = _checked_verdict(id, source_seed, profile, reproduced, verdict, criterion)
    if verdict == "check":
        decides_source = False
    return Claim(
        id=id,
        chapter=chapter,
        claim=claim,
        source_seed=source_seed,
        source_value=_check_value("source_value", source_value),
        measured=_check_value("measured", measured),
        unit=unit,
        verdict=verdict,
        profile=profile,
        model=model,
        criterion=criterion,
        interval=None if interval is None else interval.as_list(),
        interval_kind="" if interval is None else interval.kind,
        n=None if interval is None else interval.n,
        why_no_interval="" if interval is not None else why_no_interval,
        source_quote=source_quote,
        decides_source=decides_source,
        first_criterion=first_criterion,
        holds=holds if verdict == "check" else None,
    )


def _fmt(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def to_html(claim: Claim) -> str:
    """The visible row plus the machine-readable JSON the book extension collects."""
    payload = json.dumps(claim.to_json(), sort_keys=True).replace("</", "<\\/")
    colour = {"reproduced": "#1a7f37", "not_reproduced": "#cf222e", "inconclusive": "#9a6700",
              "check": "#0969da", "measured": "#57606a"}
    interval = (f" [{_fmt(claim.interval[0])}, {_fmt(claim.interval[1])}] ({html.escape(claim.interval_kind)})"
                if claim.interval is not None else "")
    kind = {"check": "check", "claim": "claim"}.get("check" if claim.verdict == "check" else "claim")
    if not claim.decides_source and claim.verdict != "check":
        kind = "contrast"
    return (
        f'<div class="{_MARK}" style="border-left:4px solid {colour[claim.verdict]};'
        'padding:2px 8px;margin:4px 0;font-size:0.9em">'
        f"<b>{kind}</b> <code>{html.escape(claim.id)}</code>: {html.escape(claim.claim)}<br>"
        f"source ({html.escape(claim.source_seed)}): {html.escape(_fmt(claim.source_value))}"
        + (f" <q>{html.escape(claim.source_quote)}</q>" if claim.source_quote else "")
        + f" · ours: <b>{html.escape(_fmt(claim.measured))}</b> {html.escape(claim.unit)}{interval}"
        f" · <b>{verdict_words(claim.to_json())}</b>"
        + (f" <i>({html.escape(claim.criterion)})</i>" if claim.criterion else "")
        + (f" <i>no interval: {html.escape(claim.why_no_interval)}</i>"
           if claim.why_no_interval and claim.verdict in DECIDED else "")
        + (f"<br><i>criterion first declared as: {html.escape(claim.first_criterion)}</i>"
           if claim.first_criterion else "")
        + f'<script type="application/json" class="{_MARK}">{payload}</script></div>'
    )


DECIDED = ("reproduced", "not_reproduced", "inconclusive")


def verdict_words(row: dict[str, Any]) -> str:
    """A row's verdict as words: "not reproduced", "check (holds)", "check FAILED"."""
    if row["verdict"] == "check":
        return "check (holds)" if row.get("holds") else "check FAILED"
    return row["verdict"].replace("_", " ")


def extract(html_text: str) -> list[dict[str, Any]]:
    """All claim rows embedded in a piece of rendered HTML (used by the book extension)."""
    return [json.loads(match.replace("<\\/", "</")) for match in _SCRIPT.findall(html_text)]


def summary(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts by verdict, for the top of the Claims page."""
    counts = {verdict: 0 for verdict in VERDICTS}
    for row in rows:
        counts[row["verdict"]] += 1
    return counts


def seed_text(folder: str | os.PathLike[str]) -> str:
    """The source studies' text in `folder` (the seeds, `../shared/seeds` beside a checkout), with
    whitespace collapsed: a quote must be found in it verbatim."""
    files = sorted(Path(folder).glob("00*.txt"))
    if not files:
        raise FileNotFoundError(f"no source studies (00*.txt) in {folder}")
    return " ".join(" ".join(p.read_text(encoding="utf-8").split()) for p in files)


def quote_found(quote: str, text: str) -> bool:
    """Whether `quote` occurs in `text` (both with whitespace collapsed)."""
    return bool(quote.strip()) and " ".join(quote.split()) in text


# --- claims declared in the package --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
    """A claim as declared beside the code that measures it, before any number is known.

    `test` decides the verdict and `criterion` says in words what it tests; both or neither (a
    claim without a test is only measured). The test is a `Region` (`at_least(0.5)`, ...) when the
    number has an interval, or a function of what `measure(tested=...)` passes (a curve, several
    numbers) when it cannot have one; such a function declares `examples=(passing, failing)` for
    its unit test. `id`, `claim`, `unit` and `criterion` may hold `{field}`s, filled by
    `measure(..., field=value)` (e.g. one declaration for every layer).

    `role`: "claim" (measures the source's statement), "check" (a property of our construction:
    verdict "check", never a reproduction) or "contrast" (a model the source did not mean: never
    decides a source claim). `source_quote`: the source's sentence that states `source_value`,
    verbatim. `why_no_interval`: why this claim's number has no interval (a row may say it
    instead). `first_criterion`: the criterion as first declared, with why it changed.
    """

    id: str
    claim: str
    source_seed: str
    source_value: SupportsFloat | str | None = None
    unit: str = ""
    criterion: str = ""
    test: Callable[[Any], bool] | None = dataclasses.field(default=None, compare=False)
    source_quote: str = ""
    role: Role = "claim"
    why_no_interval: str = ""
    first_criterion: str = ""
    examples: tuple[Any, Any] | None = dataclasses.field(default=None, compare=False)
    module: str = dataclasses.field(default="", compare=False)  # where it is declared (its chapter's package)

    def __post_init__(self) -> None:
        if not _TEMPLATE.match(self.id) or "{}" in self.id:
            raise ValueError(f"claim id {self.id!r} must be dotted lowercase words, e.g. 'regressor.f2.best_mae'")
        if self.source_seed not in SEEDS:
            raise ValueError(f"claim {self.id}: unknown source {self.source_seed!r}: choose one of {', '.join(SEEDS)}")
        if isinstance(self.test, (Region, Covers)) and not self.criterion and self.test.words:
            object.__setattr__(self, "criterion", self.test.words)
        if (self.test is None) != (not self.criterion):
            raise ValueError(f"claim {self.id}: a test needs its criterion in words, and a criterion its test")
        if self.role not in ROLES:
            raise ValueError(f"claim {self.id}: unknown role {self.role!r}: choose one of {', '.join(ROLES)}")
        _check_value("source_value", self.source_value)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_FIELD.findall(" ".join((self.id, self.claim, self.unit, self.criterion)))))

    def test_examples(self) -> tuple[Any, Any] | None:
        """A value the test passes and one it fails: declared, or derived from a region."""
        if self.examples is not None:
            return self.examples
        if isinstance(self.test, (Region, Covers)):
            return self.test.examples()
        return None

    def _decide(self, claim_id: str, subject: Any, interval: Interval | None, why: str) -> tuple[Verdict, bool | None]:
        """(verdict, holds) of a row: a check holds or not; an interval is decided by the region;
        without one the test decides, given why there is no interval."""
        if self.test is None or subject is None:
            return "measured", None
        if self.role == "check":
            return "check", bool(self.test(subject))
        if interval is not None:
            if not isinstance(self.test, (Region, Covers)):
                raise TypeError(f"claim {claim_id}: an interval is decided by a region criterion "
                                "(claims.at_least, between, covers, ...), not by a function")
            return self.test.decide(interval), None
        if isinstance(self.test, Covers):
            raise TypeError(f"claim {claim_id}: a 'covers' criterion is decided on an interval: pass interval=")
        if not why:
            raise ValueError(f"claim {claim_id}: a verdict needs an interval (claims.bootstrap, claims.seed_range)"
                             " or why_no_interval saying why it has none")
        return ("reproduced" if self.test(subject) else "not_reproduced"), None

    def measure(
        self, measured: SupportsFloat | str | None, *, chapter: str, profile: str, model: str = "", tested: Any = None,
        interval: Interval | None = None, why_no_interval: str = "", decides_source: bool | None = None,
        **fields: Any,
    ) -> Claim:
        """The row for `measured`: the declared test decides the verdict. A measurement that is not
        a number (None, or a string saying why it is missing) cannot pass a test: it is recorded
        as measured only. `tested` is what a function test reads when that is more than the number
        shown (a whole curve, several numbers); by default, `measured`. Given, it is tested even
        when the number shown is words; a caller with nothing to test passes None.

        `interval` (a `Region` test only) decides reproduced / not reproduced / inconclusive; a
        verdict without one needs `why_no_interval` (here or declared). `decides_source=False`
        marks a row of a model the source did not mean (the declared role's default otherwise).
        """
        missing = [name for name in self.fields if name not in fields]
        extra = [name for name in fields if name not in self.fields]
        if missing or extra:
            raise TypeError(f"claim {self.id}: needs fields {list(self.fields)}, got {sorted(fields)}")
        value = _check_value("measured", measured)
        claim_id = self.id.format(**fields)
        subject = tested if tested is not None else (value if isinstance(value, float) else None)
        why = why_no_interval or self.why_no_interval
        verdict, holds = self._decide(claim_id, subject, interval, why)
        if decides_source is None:
            decides_source = self.role == "claim"
        row = make_claim(
            claim_id,
            chapter=chapter,
            claim=self.claim.format(**fields),
            source_seed=self.source_seed,
            source_value=self.source_value,
            measured=value,
            unit=self.unit.format(**fields),
            verdict=verdict,
            criterion=self.criterion.format(**fields) if verdict != "measured" else "",
            profile=profile,
            model=model,
            interval=interval,
            why_no_interval=why if interval is None else "",
            source_quote=self.source_quote,
            decides_source=decides_source,
            first_criterion=self.first_criterion.format(**fields) if self.first_criterion else "",
            holds=holds,
        )
        return dataclasses.replace(row, runs_on=runs_on(model))


def runs_on(model: str) -> str:
    """"<device>, <dtype>" when `model` is this run's language model ($OPTIM_HUNTER_MODEL), whose
    answers depend on both; "" for every other row (trained toys train and run on the CPU)."""
    if not model or model != os.environ.get("OPTIM_HUNTER_MODEL", settings.DEFAULT_MODEL).strip():
        return ""
    context = settings.run_context()
    return f"{context['device']}, {context['dtype']}"


_DECLARED: dict[str, ClaimSpec] = {}


def declare(
    id: str,
    claim: str,
    *,
    source_seed: str,
    source_value: SupportsFloat | str | None = None,
    unit: str = "",
    criterion: str = "",
    test: Callable[[Any], bool] | None = None,
    source_quote: str = "",
    role: Role = "claim",
    why_no_interval: str = "",
    first_criterion: str = "",
    examples: tuple[Any, Any] | None = None,
) -> ClaimSpec:
    """Declare a claim (at module level, beside the code that measures it); its `ClaimSpec`.

    An id is declared once: a second, different declaration of the same id is an error.
    """
    module = _declaring_module()
    spec = ClaimSpec(id, claim, source_seed, source_value, unit, criterion, test, source_quote, role,
                     why_no_interval, first_criterion, examples, module)
    previous = _DECLARED.get(id)
    if previous is not None and previous != spec:
        raise ValueError(f"claim {id} is declared twice, differently")
    _DECLARED[id] = spec
    return spec


def _declaring_module() -> str:
    """The package module calling `declare` (the first caller outside this module, past any
    type-checking wrapper), so a chapter's record finds the claims its package declares."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("optim_hunter.") and name != __name__:
            return name
        frame = frame.f_back
    return ""


def declared() -> dict[str, ClaimSpec]:
    """Every claim the package declares, by id (importing every module of the package first)."""
    for module in pkgutil.walk_packages(optim_hunter.__path__, "optim_hunter."):
        if module.name != "optim_hunter.book.cli":
            importlib.import_module(module.name)
    return dict(_DECLARED)


def declared_test(claim_id: str) -> Any:
    """The test of the declared claim a row's id comes from (its id, or a template of it)."""
    for spec in _DECLARED.values():
        if spec.id == claim_id:
            return spec.test
    for spec in _DECLARED.values():
        if "{" in spec.id:
            parts = re.split(r"(\{[^{}]*\})", spec.id)  # literal, field, literal, ...
            pattern = "".join("[a-z0-9_]+" if i % 2 else re.escape(part) for i, part in enumerate(parts))
            if re.fullmatch(pattern, claim_id):
                return spec.test
    raise KeyError(f"no declared claim gives the row id {claim_id!r}")


def rows_of(*items: Any) -> list[Claim]:
    """Claim rows from any mix of rows, iterables of rows, and result objects with a `claims()`
    method (an analysis's result, which knows its chapter, profile and model)."""
    rows: list[Claim] = []
    for item in items:
        if isinstance(item, Claim):
            rows.append(item)
        elif hasattr(item, "claims") and callable(item.claims):
            rows.extend(rows_of(*item.claims()))
        elif isinstance(item, Iterable) and not isinstance(item, (str, bytes, dict)):
            rows.extend(rows_of(*item))
        else:
            raise TypeError(f"record_all takes claim rows or results with a claims() method, got {type(item).__name__}")
    return rows


def record_all(*items: Any) -> None:
    """Display the claim rows of `items` (see `rows_of`) in the running notebook as one output; the
    book collects them from there. Returns nothing, so the rows are never displayed twice."""
    rows = rows_of(*items)
    from IPython import get_ipython
    from IPython.display import HTML, display

    if get_ipython() is None:
        raise RuntimeError("claims.record_all() outside a notebook records nothing: test rows_of(result)")
    display(HTML("".join(to_html(row) for row in rows)))
