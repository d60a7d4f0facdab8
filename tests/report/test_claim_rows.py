"""Recording files a result's rows under its chapter, profile and model."""

from optim_hunter.report import claims
from optim_hunter.report.claim_rows import Recording

SPEC = claims.ClaimSpec(
    "t.layer_is_late", "The layer is late", "004", unit="layer",
    criterion="layer >= {late_from}", test=lambda pair: pair[0] >= pair[1],
    why_no_interval="an argmax over one model's layers")


def test_recording_fills_the_row_and_passes_what_the_test_reads():
    at = Recording("chapter", "smoke", "m")
    late = at.measure(SPEC, 27.0, tested=(27, 25), late_from=25)
    early = at.measure(SPEC, 3.0, tested=(3, 25), late_from=25)
    assert (late.verdict, early.verdict) == ("reproduced", "not_reproduced")
    assert late.criterion == "layer >= 25" and (late.chapter, late.profile, late.model) == ("chapter", "smoke", "m")
    assert at.measure(SPEC, "no layer", late_from=25).verdict == "measured"


def test_recording_passes_the_interval_through():
    spec = claims.ClaimSpec("t.share", "a share", "004", test=claims.at_least(0.5))
    row = Recording("chapter", "smoke", "m").measure(spec, 0.6, interval=claims.bootstrap([0.4, 0.6, 0.8]),
                                                     decides_source=False)
    assert row.verdict == "inconclusive" and row.n == 3 and row.decides_source is False
