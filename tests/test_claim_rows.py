"""Recording files a result's rows under its chapter, profile and model."""

from optim_hunter import claims
from optim_hunter.claim_rows import Recording

SPEC = claims.ClaimSpec(
    "t.layer_is_late", "The layer is late", "004", unit="layer",
    criterion="layer >= {late_from}", test=lambda pair: pair[0] >= pair[1])


def test_recording_fills_the_row_and_passes_what_the_test_reads():
    at = Recording("chapter", "smoke", "m")
    late = at.measure(SPEC, 27.0, tested=(27, 25), late_from=25)
    early = at.measure(SPEC, 3.0, tested=(3, 25), late_from=25)
    assert (late.verdict, early.verdict) == ("reproduced", "not_reproduced")
    assert late.criterion == "layer >= 25" and (late.chapter, late.profile, late.model) == ("chapter", "smoke", "m")
    assert at.measure(SPEC, "no layer", late_from=25).verdict == "measured"
