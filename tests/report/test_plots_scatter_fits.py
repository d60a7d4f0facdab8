"""plots.scatter_fits: points and least-squares line per group, R² in the legend."""

import numpy as np
import pandas as pd
import pytest

from optim_hunter.report import plots


def test_scatter_fits_draws_each_group_with_its_line():
    x = np.arange(6.0)
    table = pd.DataFrame({"x": np.concatenate([x, x]), "y": np.concatenate([2 * x + 1, [0, 1, 0, 1, 0, 1]]),
                          "g": ["line"] * 6 + ["zigzag"] * 6})
    fig = plots.scatter_fits(table, x="x", y="y", group="g", title="t", x_title="x_d")
    points, line, zig_points, zig_line = fig.data
    assert points.name == "line (R² 1.00)" and points.mode == "markers" and line.mode == "lines"
    np.testing.assert_allclose(line.x, [0, 5]) and np.testing.assert_allclose(line.y, [1, 11])
    slope, intercept = np.polyfit(x, [0, 1, 0, 1, 0, 1], 1)
    np.testing.assert_allclose(zig_line.y, [intercept, intercept + 5 * slope])
    r2 = np.corrcoef(x, [0, 1, 0, 1, 0, 1])[0, 1] ** 2
    assert zig_points.name == f"zigzag (R² {r2:.2f})"
    assert fig.layout.xaxis.title.text == "x_d" and fig.layout.yaxis.title.text == "y"
    with pytest.raises(ValueError, match="no column"):
        plots.scatter_fits(table, x="x", y="missing", group="g")
