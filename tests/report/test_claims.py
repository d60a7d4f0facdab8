"""Claims: validation, verdicts, and the HTML round trip the book extension relies on."""

import json

import pytest

from optim_hunter.report import claims

BASE = dict(chapter="ch", claim="a number", source_seed="004", source_value=1.0, measured=1.1,
            unit="nats", profile="smoke", model="m")


def test_verdicts():
    assert claims.make_claim("a.b", **BASE, reproduced=True, criterion="within 20%").verdict == "reproduced"
    assert claims.make_claim("a.b", **BASE, reproduced=False, criterion="x").verdict == "not_reproduced"
    assert claims.make_claim("a.b", **BASE).verdict == "measured"


def test_html_round_trip_keeps_every_field():
    claim = claims.make_claim("regressor.f2.best_mae", **{**BASE, "claim": "a </script> <b>trap"},
                              reproduced=True, criterion="inside CI")
    rows = claims.extract("<p>before</p>" + claims.to_html(claim) + claims.to_html(claim))
    assert rows == [claim.to_json(), claim.to_json()]
    json.dumps(rows)  # valid JSON


def test_summary_counts():
    rows = [{"verdict": v} for v in ["reproduced", "reproduced", "measured", "not_reproduced"]]
    assert claims.summary(rows) == {"reproduced": 2, "not_reproduced": 1, "inconclusive": 0, "check": 0,
                                    "measured": 1}


@pytest.mark.parametrize(
    "id_, overrides, error, message",
    [
        ("Bad Id", {}, ValueError, "dotted lowercase"),
        ("single", {}, ValueError, "dotted lowercase"),
        ("a.b", {"source_seed": "999"}, ValueError, "unknown source"),
        ("a.b", {"measured": float("nan")}, ValueError, "NaN"),
        ("a.b", {"measured": True}, TypeError, "bool"),
        ("a.b", {"measured": [1]}, TypeError, "number"),
        ("a.b", {"reproduced": True}, ValueError, "criterion"),
    ],
)
def test_bad_claims_are_rejected(id_, overrides, error, message):
    with pytest.raises(error, match=message):
        claims.make_claim(id_, **{**BASE, **overrides})


def test_declared_claim_is_decided_by_its_own_test():
    spec = claims.ClaimSpec("t.layer{layer}.gap", "gap at layer {layer}", "003", 0.5, "nats",
                            criterion="within 0.1 of 0.5", test=lambda v: abs(v - 0.5) <= 0.1,
                            why_no_interval="a test of the declaration machinery")
    good = spec.measure(0.55, chapter="c", profile="smoke", model="m", layer=2)
    bad = spec.measure(0.9, chapter="c", profile="smoke", model="m", layer=3)
    assert (good.id, good.claim, good.verdict) == ("t.layer2.gap", "gap at layer 2", "reproduced")
    assert (bad.id, bad.verdict, bad.criterion) == ("t.layer3.gap", "not_reproduced", "within 0.1 of 0.5")
    missing = spec.measure("not measured: model too weak", chapter="c", profile="smoke", model="m", layer=1)
    assert (missing.verdict, missing.criterion) == ("measured", "")


def test_declared_claim_checks_its_fields_and_declarations():
    spec = claims.ClaimSpec("t.layer{layer}.gap", "gap", "003")
    with pytest.raises(TypeError, match="needs fields"):
        spec.measure(1.0, chapter="c", profile="smoke")
    with pytest.raises(ValueError, match="criterion"):
        claims.ClaimSpec("t.a", "x", "003", test=lambda v: True)
    with pytest.raises(ValueError, match="criterion"):
        claims.ClaimSpec("t.a", "x", "003", criterion="words only")
    claims.declare("t.once", "x", source_seed="003")
    claims.declare("t.once", "x", source_seed="003")  # the same declaration again is fine
    with pytest.raises(ValueError, match="declared twice"):
        claims.declare("t.once", "y", source_seed="003")
    claims._DECLARED.pop("t.once")


def test_rows_of_flattens_results_and_rejects_other_things():
    row = claims.make_claim("a.b", **BASE)

    class Result:
        def claims(self):
            return [row, [row]]

    assert claims.rows_of(row, [row], Result()) == [row] * 4
    with pytest.raises(TypeError, match="claims\\(\\) method"):
        claims.rows_of({"id": "a.b"})


def test_record_all_outside_a_notebook_is_an_error():
    with pytest.raises(RuntimeError, match="outside a notebook"):
        claims.record_all([])


def test_a_test_may_read_more_than_the_number_shown():
    spec = claims.ClaimSpec("t.falls", "MAE falls", "issue", criterion="strictly decreasing",
                            test=lambda curve: all(b < a for a, b in zip(curve, curve[1:])),
                            why_no_interval="a curve's shape")
    assert spec.measure(1.0, chapter="c", profile="smoke", tested=[3.0, 2.0, 1.0]).verdict == "reproduced"
    assert spec.measure(1.0, chapter="c", profile="smoke", tested=[3.0, 4.0, 1.0]).verdict == "not_reproduced"


def test_fields_may_carry_a_format_spec():
    spec = claims.ClaimSpec("t.fmt", "x", "003", criterion="below the unigram's ({unigram:.3f})", test=lambda v: v < 1,
                            why_no_interval="none")
    assert spec.fields == ("unigram",)
    assert spec.measure(0.5, chapter="c", profile="smoke", unigram=0.12345).criterion == "below the unigram's (0.123)"


def test_the_language_model_s_rows_say_where_it_ran(monkeypatch):
    from optim_hunter.report import claims

    spec = claims.ClaimSpec("t.runs_on", "a number", "004", None)
    monkeypatch.setenv("OPTIM_HUNTER_MODEL", "smollm2-135m")
    monkeypatch.setenv("OPTIM_HUNTER_DEVICE", "cpu")
    monkeypatch.setenv("OPTIM_HUNTER_DTYPE", "auto")
    row = spec.measure(1.0, chapter="c", profile="smoke", model="smollm2-135m")
    assert row.runs_on == "cpu, float32" and row.to_json()["runs_on"] == "cpu, float32"
    assert spec.measure(1.0, chapter="c", profile="smoke", model="attn-only-2l").runs_on == ""  # a trained toy
