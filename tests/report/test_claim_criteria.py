"""Every declared claim's criterion, audited: one input it passes and one it fails, and every source
value quoted verbatim from the source studies (`../shared/seeds` beside the checkout)."""

from pathlib import Path

import pytest

from optim_hunter.report import claims

SPECS = claims.declared()
TESTED = sorted(spec_id for spec_id, spec in SPECS.items() if spec.test is not None)
WITH_VALUE = sorted(spec_id for spec_id, spec in SPECS.items() if spec.source_value is not None)
SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"


@pytest.mark.parametrize("spec_id", TESTED)
def test_every_criterion_passes_one_input_and_fails_another(spec_id):
    spec = SPECS[spec_id]
    examples = spec.test_examples()
    assert examples is not None, f"{spec_id}: a function test declares examples=(passing, failing)"
    passing, failing = examples
    assert spec.test(passing) is True or spec.test(passing) == True  # noqa: E712  (numpy bools)
    assert not spec.test(failing)


@pytest.fixture(scope="module")
def seed_text() -> str:
    if not SEEDS.is_dir():
        pytest.skip(f"the source studies are not beside this checkout ({SEEDS})")
    return claims.seed_text(SEEDS)


@pytest.mark.parametrize("spec_id", WITH_VALUE)
def test_every_source_value_is_quoted_verbatim(spec_id, seed_text):
    spec = SPECS[spec_id]
    assert spec.source_quote, f"{spec_id}: a source value needs the sentence that states it (source_quote)"
    assert claims.quote_found(spec.source_quote, seed_text), f"{spec_id}: quote not found in the seeds"


def test_a_quote_must_be_verbatim():
    text = " ".join("The model reaches a loss of 0.0001 after training.".split())
    assert claims.quote_found("reaches a  loss\nof 0.0001", text)
    assert not claims.quote_found("reaches a loss of 0.001", text)
    assert not claims.quote_found("", text)


def test_checks_never_decide_and_contrasts_keep_their_verdict():
    check = claims.ClaimSpec("t.identity", "an identity", "004", test=claims.at_most(1e-6), role="check")
    row = check.measure(0.0, chapter="c", profile="smoke")
    assert (row.verdict, row.holds, row.decides_source) == ("check", True, False)
    failed = check.measure(1.0, chapter="c", profile="smoke")
    assert (failed.verdict, failed.holds) == ("check", False)
    contrast = claims.ClaimSpec("t.toy", "a toy", "004", test=claims.below(5), role="contrast")
    row = contrast.measure(1.0, chapter="c", profile="smoke", interval=claims.bootstrap([0.5, 1.0, 1.5]))
    assert (row.verdict, row.decides_source) == ("reproduced", False)


def test_a_verdict_needs_an_interval_or_a_reason():
    spec = claims.ClaimSpec("t.x", "x", "004", test=claims.at_least(0.5))
    with pytest.raises(ValueError, match="why_no_interval"):
        spec.measure(0.7, chapter="c", profile="smoke")
    row = spec.measure(0.7, chapter="c", profile="smoke", why_no_interval="one training run")
    assert (row.verdict, row.interval, row.why_no_interval) == ("reproduced", None, "one training run")
    straddles = spec.measure(0.55, chapter="c", profile="smoke", interval=claims.bootstrap([0.3, 0.6, 0.75]))
    assert straddles.verdict == "inconclusive" and straddles.interval[0] < 0.5 < straddles.interval[1]
    assert straddles.n == 3 and straddles.interval_kind == "bootstrap 95% over 3 units"
    function = claims.ClaimSpec("t.f", "f", "004", criterion="x", test=lambda t: t[0] < t[1], examples=((1, 2), (2, 1)))
    with pytest.raises(TypeError, match="region"):
        function.measure(1.0, chapter="c", profile="smoke", tested=(1, 2), interval=claims.bootstrap([1.0, 2.0]))


def test_the_row_keeps_the_quote_and_the_first_criterion():
    spec = claims.ClaimSpec("t.q", "q", "004", source_value=0.5, source_quote="about half", test=claims.above(0.4),
                            first_criterion="> 0.45, changed after the first run because ...")
    row = spec.measure(0.6, chapter="c", profile="smoke", interval=claims.bootstrap([0.5, 0.6, 0.7]))
    data = row.to_json()
    for field in ("interval", "interval_kind", "n", "why_no_interval", "source_quote", "decides_source",
                  "first_criterion"):
        assert field in data
    assert data["source_quote"] == "about half" and data["first_criterion"].startswith("> 0.45")
    assert "first declared as" in claims.to_html(row)
