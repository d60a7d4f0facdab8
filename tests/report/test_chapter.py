"""chapter.glue: every number a result names reaches myst-nb as a plain Python value, undisplayed."""

import numpy as np

from optim_hunter.report import prose


def test_glue_passes_plain_numbers(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, value, display)))

    class Result:
        def numbers(self):
            return {"a": np.float64(0.5), "b": np.int64(3), "c": "text", "d": np.bool_(True)}

    prose.glue(Result(), Result())
    assert calls == [("a", 0.5, False), ("b", 3, False), ("c", "text", False), ("d", True, False)] * 2
    assert [type(value) for _, value, _ in calls[:4]] == [float, int, str, bool]  # repr(np.float64) is no literal
