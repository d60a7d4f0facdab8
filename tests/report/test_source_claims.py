"""The source-claims manifest (book/source_claims.yml) stays complete and honest.

It lists every quantitative claim of the four seeds with the book claim ids that measure it, or a
reason why nothing does. Every source value carries the seed's sentence that states it (`quote`,
checked verbatim against the seeds in ../shared/seeds when that folder is there); a value the seed
does not state is null and its note says so. These tests guard its shape, and — the point of it —
that every id it names is declared in the package (`claims.declare`, read through
`claims.declared()`; a declared id's `{field}`s stand for one id word each). Code that renames or
drops a claim therefore fails the suite until the manifest follows. Entries whose note says "pending
chapter" name ids of a chapter not written yet: they are counted in a warning, not checked. No book
is built.
"""

import re
import warnings
from pathlib import Path

import pytest
import yaml

from optim_hunter.report import claims

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "book" / "source_claims.yml"
SEEDS = ("001", "002", "003", "004")
PENDING = "pending chapter"
FIELDS = {"id", "seed", "claim", "source_value", "measured_by", "note"}
OPTIONAL_FIELDS = {"quote"}
NO_NUMBER = "the source states no number here"
SEEDS_DIR = ROOT.parent / "shared" / "seeds"
MANIFEST_ID = re.compile(r"^s00[1-4](\.[a-z0-9_]+)+$")
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
WILDCARD = "[a-z0-9_]+"
def load_manifest() -> list[dict]:
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))


def recorded_templates() -> set[str]:
    """Every claim id the package declares; fields stay as `{...}`."""
    return set(claims.declared())


def as_regex(template: str) -> re.Pattern:
    """`lsa.depth{k}.gd_loss` -> a regex in which each f-string field matches one id word."""
    parts = PLACEHOLDER.split(template)
    return re.compile(WILDCARD.join(re.escape(p) for p in parts))


def is_recorded(book_id: str, templates: set[str]) -> bool:
    """A literal id matches a recorded literal or f-string; an id with `{fields}` matches a recorded
    f-string with fields in the same places."""
    canonical = PLACEHOLDER.sub("{}", book_id)
    for template in templates:
        if PLACEHOLDER.sub("{}", template) == canonical:
            return True
        if not PLACEHOLDER.search(book_id) and as_regex(template).fullmatch(book_id):
            return True
    return False


def is_pending(entry: dict) -> bool:
    return PENDING in (entry.get("note") or "")


def test_manifest_parses_as_a_list_of_entries():
    entries = load_manifest()
    assert isinstance(entries, list) and entries
    for entry in entries:
        assert isinstance(entry, dict), entry
        assert FIELDS <= set(entry) <= FIELDS | OPTIONAL_FIELDS, (
            f"{entry.get('id')}: fields {sorted(entry)}, want {sorted(FIELDS)}"
            f" (optional: {sorted(OPTIONAL_FIELDS)})")
        assert isinstance(entry["claim"], str) and entry["claim"].strip(), entry["id"]
        value = entry["source_value"]
        assert value is None or isinstance(value, (str, int, float)), entry["id"]
        assert isinstance(entry["measured_by"], list), entry["id"]
        assert isinstance(entry["note"], str), entry["id"]


def test_ids_are_unique_well_formed_and_match_their_seed():
    entries = load_manifest()
    ids = [e["id"] for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate manifest ids: {duplicates}"
    for entry in entries:
        assert MANIFEST_ID.match(entry["id"]), entry["id"]
        assert entry["seed"] in SEEDS, entry["id"]
        assert entry["id"].startswith(f"s{entry['seed']}."), f"{entry['id']} is not under seed {entry['seed']}"


def test_every_seed_has_claims():
    seeds = {e["seed"] for e in load_manifest()}
    assert seeds == set(SEEDS)


def test_unmeasured_claims_say_why():
    for entry in load_manifest():
        if not entry["measured_by"]:
            assert entry["note"].strip(), f"{entry['id']}: measured_by is empty, so the note must say why"


def test_book_ids_are_well_formed():
    for entry in load_manifest():
        for book_id in entry["measured_by"]:
            assert isinstance(book_id, str), entry["id"]
            assert claims._ID.match(PLACEHOLDER.sub("x", book_id)), f"{entry['id']}: bad book id {book_id!r}"


def test_declared_ids_are_found_and_matched():
    templates = recorded_templates()
    assert "lsa.zero_loss" in templates
    assert "regressor.{dataset}.llm_mae" in templates  # with a field
    assert "zoo.numeric.affine_top1" in templates
    assert is_recorded("regressor.friedman2.llm_mae", templates)
    assert is_recorded("lsa.depth{k}.gd_loss", templates)
    assert not is_recorded("regressor.friedman2.no_such_claim", templates)
    assert not is_recorded("regressor.two.words.llm_mae", templates)  # a field is one id word


def test_every_mapped_book_id_is_recorded_by_a_chapter():
    templates = recorded_templates()
    entries = load_manifest()
    missing = [
        f"{e['id']} -> {book_id}"
        for e in entries if not is_pending(e)
        for book_id in e["measured_by"] if not is_recorded(book_id, templates)
    ]
    assert not missing, "manifest ids no chapter records (renamed or dropped?):\n" + "\n".join(missing)

    pending = [e for e in entries if is_pending(e)]
    if pending:
        landed = [e["id"] for e in pending
                  if e["measured_by"] and all(is_recorded(b, templates) for b in e["measured_by"])]
        warnings.warn(
            f"{len(pending)} source claims point at a {PENDING} and were not checked"
            + (f"; now recorded, drop the note: {', '.join(landed)}" if landed else ""),
            UserWarning,
            stacklevel=1,
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_claims_are_counted(seed):
    """Not a rule, a floor: a manifest that loses most of a seed's claims is a mistake."""
    floor = {"001": 15, "002": 8, "003": 25, "004": 10}[seed]
    assert sum(e["seed"] == seed for e in load_manifest()) >= floor


def test_source_values_are_quoted_or_null():
    """A source value comes with the sentence that states it; a null one says why in its note."""
    for entry in load_manifest():
        if entry["source_value"] is None:
            assert NO_NUMBER in entry["note"], (
                f"{entry['id']}: source_value is null, so the note must say {NO_NUMBER!r}")
        else:
            quote = entry.get("quote")
            assert isinstance(quote, str) and quote.strip(), f"{entry['id']}: a source_value needs a quote"


def test_quotes_are_verbatim_in_their_seed(tmp_path):
    """Each quote occurs in the seeds' text (whitespace aside), and in the seed its entry names."""
    if not SEEDS_DIR.is_dir():
        pytest.skip(f"no seeds folder at {SEEDS_DIR}")
    text = claims.seed_text(SEEDS_DIR)
    per_seed = {}
    for seed in SEEDS:
        files = sorted(SEEDS_DIR.glob(f"{seed}_*.txt"))
        assert len(files) == 1, f"seed {seed}: expected one {seed}_*.txt in {SEEDS_DIR}, found {files}"
        folder = tmp_path / seed
        folder.mkdir()
        (folder / files[0].name).write_bytes(files[0].read_bytes())
        per_seed[seed] = claims.seed_text(folder)
    quoted = [e for e in load_manifest() if e["source_value"] is not None]
    assert quoted
    missing = [e["id"] for e in quoted if not claims.quote_found(e.get("quote") or "", text)]
    assert not missing, "quotes not found verbatim in the seeds:\n" + "\n".join(missing)
    elsewhere = [e["id"] for e in quoted if not claims.quote_found(e["quote"], per_seed[e["seed"]])]
    assert not elsewhere, "quotes not found in their own seed:\n" + "\n".join(elsewhere)
