"""The claims registry: each measurement checked against a source study's value.

A claim is *declared* in the package, beside the code that measures it, with `declare(...)`: its
id, the source's value and the criterion that decides the verdict, all fixed before any number is
known. An analysis turns its declared claims into rows with `ClaimSpec.measure(value, ...)` (the
criterion's test is applied to the value, never chosen after seeing it), and a chapter records all
rows of a section with one call, `record_all(result)`.

`record_all` displays the rows in the executing notebook as HTML that carries each row as JSON. The
book's Sphinx extension (`optim_hunter.sphinx_ext`) collects those rows from every executed
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
import pkgutil
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, SupportsFloat

Verdict = Literal["reproduced", "not_reproduced", "measured"]
VERDICTS: tuple[Verdict, ...] = ("reproduced", "not_reproduced", "measured")
SEEDS = ("001", "002", "003", "004", "llm4regression", "von-oswald-2023", "olsson-2022", "issue")

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
) -> Claim:
    """Validate and build a Claim.

    `reproduced` is the chapter's own test of the source's statement (True/False), with the test
    written out in `criterion`; None means the row is only measured (no comparable source value).
    """
    if not _ID.match(id):
        raise ValueError(f"claim id {id!r} must be dotted lowercase words, e.g. 'regressor.f2.best_mae'")
    if source_seed not in SEEDS:
        raise ValueError(f"unknown source {source_seed!r}: choose one of {', '.join(SEEDS)}")
    from optim_hunter import settings

    settings.profile(profile)  # a typo would file the row under a profile no page shows
    if reproduced is not None and not criterion:
        raise ValueError(f"claim {id}: a verdict needs the criterion that decided it")
    verdict: Verdict = "measured" if reproduced is None else (
        "reproduced" if reproduced else "not_reproduced"
    )
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
    colour = {"reproduced": "#1a7f37", "not_reproduced": "#cf222e", "measured": "#57606a"}
    return (
        f'<div class="{_MARK}" style="border-left:4px solid {colour[claim.verdict]};'
        'padding:2px 8px;margin:4px 0;font-size:0.9em">'
        f"<b>claim</b> <code>{html.escape(claim.id)}</code>: {html.escape(claim.claim)}<br>"
        f"source ({html.escape(claim.source_seed)}): {html.escape(_fmt(claim.source_value))}"
        f" · ours: <b>{html.escape(_fmt(claim.measured))}</b> {html.escape(claim.unit)}"
        f" · <b>{claim.verdict.replace('_', ' ')}</b>"
        + (f" <i>({html.escape(claim.criterion)})</i>" if claim.criterion else "")
        + f'<script type="application/json" class="{_MARK}">{payload}</script></div>'
    )


def extract(html_text: str) -> list[dict[str, Any]]:
    """All claim rows embedded in a piece of rendered HTML (used by the book extension)."""
    return [json.loads(match.replace("<\\/", "</")) for match in _SCRIPT.findall(html_text)]


def summary(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts by verdict, for the top of the Claims page."""
    counts = {verdict: 0 for verdict in VERDICTS}
    for row in rows:
        counts[row["verdict"]] += 1
    return counts


def relative_difference(measured: float, source: float) -> float:
    """`abs(measured - source) / abs(source)`: the usual test of a reproduced number."""
    if source == 0:
        raise ValueError("relative difference to a source value of 0 is undefined")
    return abs(measured - source) / abs(source)


# --- claims declared in the package --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
    """A claim as declared beside the code that measures it, before any number is known.

    `test(measured) -> bool` decides the verdict and `criterion` says in words what it tests; both
    or neither (a claim without a test is only measured). `id`, `claim`, `unit` and `criterion` may
    hold `{field}`s, filled by `measure(..., field=value)` (e.g. one declaration for every layer).
    """

    id: str
    claim: str
    source_seed: str
    source_value: SupportsFloat | str | None = None
    unit: str = ""
    criterion: str = ""
    test: Callable[[Any], bool] | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _TEMPLATE.match(self.id) or "{}" in self.id:
            raise ValueError(f"claim id {self.id!r} must be dotted lowercase words, e.g. 'regressor.f2.best_mae'")
        if self.source_seed not in SEEDS:
            raise ValueError(f"claim {self.id}: unknown source {self.source_seed!r}: choose one of {', '.join(SEEDS)}")
        if (self.test is None) != (not self.criterion):
            raise ValueError(f"claim {self.id}: a test needs its criterion in words, and a criterion its test")
        _check_value("source_value", self.source_value)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_FIELD.findall(" ".join((self.id, self.claim, self.unit, self.criterion)))))

    def measure(
        self, measured: SupportsFloat | str | None, *, chapter: str, profile: str, model: str = "", tested: Any = None,
        **fields: Any,
    ) -> Claim:
        """The row for `measured`: the declared test decides the verdict. A measurement that is not
        a number (None, or a string saying why it is missing) cannot pass a test: it is recorded
        as measured only. `tested` is what the test reads when that is more than the number shown
        (e.g. a whole curve, the number and a baseline measured in the same run, or the numbers
        behind a verdict shown as words); by default, `measured`. Given, it is tested even when the
        number shown is words; a caller with nothing to test passes None."""
        missing = [name for name in self.fields if name not in fields]
        extra = [name for name in fields if name not in self.fields]
        if missing or extra:
            raise TypeError(f"claim {self.id}: needs fields {list(self.fields)}, got {sorted(fields)}")
        value = _check_value("measured", measured)
        reproduced = None
        if self.test is not None and tested is not None:
            reproduced = bool(self.test(tested))
        elif self.test is not None and isinstance(value, float):
            reproduced = bool(self.test(value))
        return make_claim(
            self.id.format(**fields),
            chapter=chapter,
            claim=self.claim.format(**fields),
            source_seed=self.source_seed,
            source_value=self.source_value,
            measured=value,
            unit=self.unit.format(**fields),
            reproduced=reproduced,
            criterion=self.criterion.format(**fields) if reproduced is not None else "",
            profile=profile,
            model=model,
        )


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
) -> ClaimSpec:
    """Declare a claim (at module level, beside the code that measures it); its `ClaimSpec`.

    An id is declared once: a second, different declaration of the same id is an error.
    """
    spec = ClaimSpec(id, claim, source_seed, source_value, unit, criterion, test)
    previous = _DECLARED.get(id)
    if previous is not None and previous != spec:
        raise ValueError(f"claim {id} is declared twice, differently")
    _DECLARED[id] = spec
    return spec


def declared() -> dict[str, ClaimSpec]:
    """Every claim the package declares, by id (importing every module of the package first)."""
    import optim_hunter

    for module in pkgutil.walk_packages(optim_hunter.__path__, "optim_hunter."):
        if module.name != "optim_hunter.cli":
            importlib.import_module(module.name)
    return dict(_DECLARED)


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
