"""What a chapter does with a section's result besides showing it: paste its numbers into the prose.

Every analysis result a chapter section gets has `numbers()` (name -> value: what the prose quotes)
and `claims()` (the rows of its declared claims). `glue(*results)` hands the numbers to myst-nb's
`glue`, so the prose reads them with {glue:text}`name:.3g` and never types a number the code can
change; `claims.record_all(*results)` records the rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """numpy scalars as Python numbers (so the prose's format specs apply to them)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def glue(*results: Any) -> None:
    """myst-nb `glue` every entry of each result's `numbers()`, without displaying them."""
    from myst_nb import glue as myst_glue

    for result in results:
        for name, value in result.numbers().items():
            myst_glue(name, plain(value), display=False)
